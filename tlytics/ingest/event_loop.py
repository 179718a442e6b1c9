"""The server's event loop: uvloop where it is installed (a dependency on Linux and macOS), a
faster loop, else asyncio's own. For the single server (tlytics.cli) and each worker."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
