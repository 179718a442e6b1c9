"""Hostile request bodies cost bounded work, off the event loop: many gzip members, a small gzip
body inflating to 10 MiB of tiny objects, several at once (issue 19, items 1 and 2)."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from bench.loop_stall import many_gzip_members, tiny_objects_bomb
from tests.helpers import spool_count
from tlytics.errors import InvalidRequest
from tlytics.ingest.bodies import GZIP_MEMBERS_MAX, decode_body
from tlytics.ingest.body_work import BodyWorkers
from tlytics.ingest.responses import ApiError

GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


class LoopStalls:
    """The longest gap between ticks of a task that asks for the loop every millisecond."""

    def __init__(self) -> None:
        self.longest_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest_s = max(self.longest_s, now - last)
            last = now

    def __enter__(self) -> LoopStalls:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_many_empty_gzip_members_are_refused_at_once(client: Any, app: web.Application) -> None:
    """2 MiB of empty gzip members took seconds of the loop (quadratic): now a 400 naming the
    member limit, and the loop never waits long."""
    with LoopStalls() as stalls:
        response = await client.post("/events", data=many_gzip_members(100_000), headers=GZIP_JSON)
    assert response.status == 400
    answer = await response.json()
    assert answer["field"] == "Content-Encoding"
    assert f"more than {GZIP_MEMBERS_MAX} gzip members" in answer["error"]
    assert stalls.longest_s < 2.0
    assert spool_count(app) == 0


def test_a_member_past_the_limit_is_refused() -> None:
    body = gzip.compress(b"[]") + gzip.compress(b"") * (GZIP_MEMBERS_MAX - 1)
    assert decode_body(body, "gzip", 1024) == b"[]"
    with pytest.raises(InvalidRequest, match="gzip members"):
        decode_body(body + gzip.compress(b""), "gzip", 1024)


async def test_a_small_body_of_tiny_objects_is_413_without_holding_the_loop(client: Any, app: web.Application) -> None:
    """10 KB of gzip inflating to 10 MiB of `{}`: the size limits refuse it, checked first and
    off the loop (it held the loop ~6 s while Python parsed it all); three at once too."""
    bomb = tiny_objects_bomb()
    assert len(bomb) < 64 * 1024
    with LoopStalls() as stalls:
        responses = await asyncio.gather(*(client.post("/events", data=bomb, headers=GZIP_JSON) for _ in range(3)))
        health = await client.get("/health")
    assert health.status == 200
    for response in responses:
        assert response.status == 413
        answer = await response.json()
        assert "more than" in answer["error"] and answer["index"] == 0
    # A generous bound for a busy machine (GIL waits behind the body thread's C calls): the
    # old path held the loop for 6 s to minutes per body.
    assert stalls.longest_s < 2.0
    assert spool_count(app) == 0


async def test_a_large_valid_body_is_accepted_off_the_loop(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """A body past the inline size still gets its 200 (the work moved, the answer did not)."""
    client = await aiohttp_client(make_app())
    events = b"[" + b",".join(b'{"key":"k","data":{"n":%d}}' % n for n in range(8000)) + b"]"
    assert len(events) > 64 * 1024
    response = await client.post("/events", data=gzip.compress(events), headers=GZIP_JSON)
    assert response.status == 200 and (await response.json())["count"] == 8000


async def test_body_work_beyond_its_queue_is_503_with_retry_after() -> None:
    """Bounded concurrency: with every thread busy and the queue full, the next is refused at
    once (503 + Retry-After) instead of piling bodies up in memory."""
    workers = BodyWorkers(threads=1, queue_max=1)
    release = threading.Event()
    try:
        running = asyncio.ensure_future(workers.run(release.wait, 30))
        waiting = asyncio.ensure_future(workers.run(lambda: "queued"))
        await asyncio.sleep(0)
        assert workers.admitted == 2
        with pytest.raises(ApiError) as refused:
            await workers.run(lambda: "refused")
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
        release.set()
        assert await running is True and await waiting == "queued"
        assert workers.admitted == 0
    finally:
        release.set()
        workers.close()
