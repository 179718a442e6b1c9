"""Reads off the event loop: `await run_read(request, fn, *args)` runs a blocking read (the
store, the spool's figures) on the application's reader thread, so a slow query never holds
the loop that answers `/health` and acknowledges events. Each read has `--read-timeout` from
the moment it is queued: the store stops it there (see tlytics.store.budget)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from aiohttp import web

from tlytics.ingest.state import READ_EXECUTOR, SETTINGS
from tlytics.store.budget import start_budget

P = ParamSpec("P")
T = TypeVar("T")


async def run_read(request: web.Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on the reader thread; its result, or its exception, here."""
    # In the request's context (as asyncio.to_thread does), so what the read logs carries the
    # request id the middleware bound.
    context = contextvars.copy_context()
    # The budget is the read's alone (set in its copy of the context) and counts from now:
    # waiting for a free reading thread spends it too.
    context.run(start_budget, request.app[SETTINGS].read_timeout_s)
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(request.app[READ_EXECUTOR], call)
