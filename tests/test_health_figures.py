"""/health's figures agree: an empty spool comes with a stored-events count that has every
acknowledged event, even when the store's count it joined was asked for before the writer's
last commit (the writer removes spool entries only after the store committed them)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from tlytics.ingest.health_watch import OneAtATime, SpoolFigures, StoreHealth, read_figures
from tlytics.store.on_demand import ReaderOnDemand


class _Store:
    """A store's count: the events committed when the count began; the first count waits for
    `release` before it answers (a probe still running when the writer commits)."""

    def __init__(self) -> None:
        self.committed = 0
        self.release = threading.Event()
        self.counts_begun = 0
        self.queries = self
        self.count = self._count

    def _count(self) -> int:
        self.counts_begun += 1
        seen = self.committed
        if self.counts_begun == 1:
            assert self.release.wait(30), "the test never released the first count"
        return seen

    def run(self, query: Callable[[], int]) -> int:
        return query()

    def close(self) -> None:
        pass


def _figures(entries: int) -> SpoolFigures:
    return SpoolFigures(
        entries=entries,
        counted_at=time.monotonic(),
        size_bytes=0,
        oldest_age_s=0.0,
        disk_free_bytes=1 << 30,
        quarantined_entries=0,
        quarantine_bytes=0,
    )


def _health(store: _Store) -> StoreHealth:
    return StoreHealth(cast(ReaderOnDemand, cast(Any, store)), unhealthy_after_s=30.0)


async def test_an_empty_spool_comes_with_a_count_asked_after_it() -> None:
    store = _Store()
    health = _health(store)
    spool_entries = 1

    def spool_figures() -> SpoolFigures:
        figures = _figures(spool_entries)
        store.release.set()  # the running count answers only once the spool was seen empty
        return figures

    earlier = asyncio.create_task(health.check())  # an earlier /health's count, still running
    while store.counts_begun == 0:
        await asyncio.sleep(0.001)
    store.committed, spool_entries = 5, 0  # the writer commits its last batch, then empties the spool
    call = OneAtATime(spool_figures, thread_name="test-spool")
    try:
        figures = await read_figures(health, call)
        await earlier
    finally:
        call.close()
        health.close()
    assert isinstance(figures, SpoolFigures)
    assert figures.entries == 0
    assert health.stored_events == 5  # not the 0 the joined count saw
    assert store.counts_begun == 2


async def test_a_spool_with_entries_keeps_the_joined_count() -> None:
    store = _Store()
    store.release.set()
    store.committed = 3
    health = _health(store)
    call = OneAtATime(lambda: _figures(2), thread_name="test-spool")
    try:
        figures = await read_figures(health, call)
    finally:
        call.close()
        health.close()
    assert isinstance(figures, SpoolFigures) and figures.entries == 2
    assert health.stored_events == 3
    assert store.counts_begun == 1  # asked once: with entries waiting, no count can be complete


async def test_a_store_that_does_not_answer_is_not_asked_again(monkeypatch: Any) -> None:
    monkeypatch.setattr("tlytics.ingest.health_watch.PROBE_WAIT_S", 0.2)
    store = _Store()  # its first count hangs until released
    health = _health(store)
    call = OneAtATime(lambda: _figures(0), thread_name="test-spool")
    try:
        started = time.monotonic()
        figures = await read_figures(health, call)
        took = time.monotonic() - started
    finally:
        store.release.set()
        call.close()
        health.close()
    assert isinstance(figures, SpoolFigures)
    assert health.stored_events is None and health.error is not None
    assert "did not answer" in health.error
    assert store.counts_begun == 1
    assert took < 10
