"""Reads off the event loop: `await run_read(request, fn, *args)` runs a blocking read (the
store, the spool's figures) on the application's reader thread, so a slow query never holds
the loop that answers `/health` and acknowledges events."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from aiohttp import web

from tlytics.ingest.state import READ_EXECUTOR

P = ParamSpec("P")
T = TypeVar("T")


async def run_read(request: web.Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on the reader thread; its result, or its exception, here."""
    # In the request's context (as asyncio.to_thread does), so what the read logs carries the
    # request id the middleware bound.
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(request.app[READ_EXECUTOR], call)
