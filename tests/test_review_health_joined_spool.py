"""/health's `spool_entries: 0` must mean "every event acknowledged before this /health is
stored". A /health that joins the spool figures an earlier /health is still reading (counted
before this one's event was acknowledged, the rest of the figures slow: a busy disk) reported
an empty spool while the event was still in it, so a client polling /health until the spool
is empty (as `wait_drained` does) went on to read a store that did not have its event yet."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, cast

from tlytics.ingest.health_watch import OneAtATime, SpoolFigures, StoreHealth, read_figures
from tlytics.store.on_demand import ReaderOnDemand


class _Store:
    """A store whose count answers at once: the events the writer committed."""

    def __init__(self) -> None:
        self.committed = 0
        self.queries = self

    def count(self) -> int:
        return self.committed

    def run(self, query: Any) -> int:
        return cast(int, query())

    def close(self) -> None:
        pass


class _Spool:
    """The spool's figures: its entries counted first, then the slower figures; the first
    reading waits for `release` after counting (a slow disk)."""

    def __init__(self) -> None:
        self.entries = 0
        self.readings = 0
        self.counted = threading.Event()
        self.release = threading.Event()

    def figures(self) -> SpoolFigures:
        self.readings += 1
        entries = self.entries
        counted_at = time.monotonic()
        if self.readings == 1:
            self.counted.set()
            assert self.release.wait(30), "the test never released the first reading"
        return SpoolFigures(
            entries=entries,
            counted_at=counted_at,
            size_bytes=0,
            oldest_age_s=0.0,
            disk_free_bytes=1 << 30,
            quarantined_entries=0,
            quarantine_bytes=0,
        )


class _Counted(OneAtATime[SpoolFigures]):
    """Counts the /health requests that asked it for figures."""

    asked = 0

    async def result(self, *, wait_s: float) -> SpoolFigures:
        self.asked += 1
        return await super().result(wait_s=wait_s)

    async def answer(self, *, wait_s: float, asked_after: float | None = None) -> tuple[float, SpoolFigures]:
        self.asked += 1
        return await super().answer(wait_s=wait_s, asked_after=asked_after)


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.005)


async def test_a_health_after_an_acknowledged_event_does_not_report_an_empty_spool_read_before_it() -> None:
    store, spool = _Store(), _Spool()
    health = StoreHealth(cast(ReaderOnDemand, cast(Any, store)), unhealthy_after_s=30.0)
    call = _Counted(spool.figures, thread_name="test-spool")
    try:
        earlier = asyncio.create_task(read_figures(health, call))  # a monitor's /health, slow spool
        await _until(spool.counted.is_set, "the earlier /health to count the spool (empty)")
        spool.entries = 1  # a client's event acknowledged: in the spool, not stored yet
        later = asyncio.create_task(read_figures(health, call))  # the client's /health after its ack
        await _until(lambda: call.asked == 2, "the client's /health to ask for the spool's figures")
        spool.release.set()
        figures = await later
        await earlier
    finally:
        spool.release.set()
        call.close()
        health.close()
    assert isinstance(figures, SpoolFigures)
    # Either the event is still counted in the spool, or the store has it: never neither.
    assert figures.entries == 1 or health.stored_events == 1, (figures.entries, health.stored_events)


async def test_many_healths_behind_a_slow_spool_reading_queue_one_more_reading_at_most() -> None:
    store, spool = _Store(), _Spool()
    health = StoreHealth(cast(ReaderOnDemand, cast(Any, store)), unhealthy_after_s=30.0)
    call = _Counted(spool.figures, thread_name="test-spool")
    try:
        first = asyncio.create_task(read_figures(health, call))
        await _until(spool.counted.is_set, "the first /health to begin reading the spool")
        others = []
        for n in range(2, 12):  # each asked after the last: a monitor polling a slow disk
            others.append(asyncio.create_task(read_figures(health, call)))
            await _until(lambda n=n: call.asked == n, f"/health number {n} to ask")
        spool.release.set()
        answers = await asyncio.gather(first, *others)
    finally:
        spool.release.set()
        call.close()
        health.close()
    assert all(isinstance(figures, SpoolFigures) for figures in answers)
    assert spool.readings <= 2  # the slow one, and one begun after every later /health asked
