"""Work on request bodies off the event loop, with bounded concurrency and a bounded queue.

Decoding and validating a body cost time in proportion to its size: a few hundred KiB take a
millisecond or two, 10 MiB of tiny nested objects seconds. Small bodies are handled on the
loop (a thread hop would cost more than the work); anything larger runs here, on a couple of
threads of its own, so the loop keeps answering `/health` and small posts meanwhile. The
threads are few on purpose: this work is mostly Python holding the GIL, so more threads would
not go faster, only take the GIL from the loop more often. Requests beyond what the threads
and a short queue hold are answered 503 + Retry-After at once rather than piling up bodies in
memory: a flood of hostile bodies costs its senders retries, not the server its loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import structlog
from aiohttp import web

from tlytics.ingest.responses import ApiError

P = ParamSpec("P")
T = TypeVar("T")

log = structlog.get_logger("tlytics.ingest")

# Bodies up to this size are decoded and checked on the event loop: msgspec's fast path takes
# at most a few milliseconds for them (gzip included; the worst is 64 KiB of `{}`, ~4 ms on a
# busy machine), and a thread hop would cost more than the usual body's work.
INLINE_BODY_BYTES = 64 * 1024
# The reference rules (pure Python) cost ~0.6 µs a byte on the worst input (tiny nested
# objects): on the loop only below this, ~2 ms.
INLINE_REFERENCE_BYTES = 4 * 1024
BODY_THREADS = 1
# Bodies waiting for a thread, beyond those being worked on; more are refused with a 503.
BODY_QUEUE_MAX = 16
RETRY_AFTER_S = "1"


class BodyWorkers:
    """A few threads for body work, and the count of requests using or waiting for them."""

    def __init__(self, *, threads: int = BODY_THREADS, queue_max: int = BODY_QUEUE_MAX) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="body-work")
        self._admitted_max = threads + queue_max
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Requests whose body work is running or waiting now."""
        return self._admitted

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on a body thread; 503 + Retry-After when all are busy and the
        queue is full. A cancelled request's work is dropped if it has not started yet."""
        if self._admitted >= self._admitted_max:
            log.warning("body_work_busy", admitted=self._admitted)
            raise ApiError(
                503,
                "the server is busy decoding other large request bodies; retry later",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        self._admitted += 1
        try:
            # In the request's context, so what the work logs carries the request id.
            call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        finally:
            self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


BODY_WORKERS = web.AppKey("body_workers", BodyWorkers)


async def body_workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the body threads live as long as the application."""
    workers = BodyWorkers()
    app[BODY_WORKERS] = workers
    yield
    await asyncio.to_thread(workers.close)
