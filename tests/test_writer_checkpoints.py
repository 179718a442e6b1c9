"""How often the writer works on the spool (issue 22): once a batch has caught up with the
spool, the periodic drain waits a moment for what arrived meanwhile instead of chasing it in
batches of a few entries; the spool's WAL is still given back once drained."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, TypeVarTuple

from tests.helpers import eventually_async
from tlytics.spool import Spool
from tlytics.store import SQLiteWriter
from tlytics.writer import DrainResult, ThreadExecutor, WriterResources, WriteScheduler, drain_batch
from tlytics.writer.scheduler import CATCH_UP_PAUSE_S

MiB = 1024 * 1024
T = TypeVar("T")
Args = TypeVarTuple("Args")


def _entry(n: int, events: int = 1, padding: int = 0) -> bytes:
    rows = ",".join(
        f'["{n * 1000 + i:032x}","k",{1_700_000_000_000_000 + n},{{"p":"{"x" * padding}"}}]' for i in range(events)
    )
    return f'{{"received_at":1700000000000000,"events":[{rows}]}}'.encode()


def _stored(store: SQLiteWriter) -> int:
    return int(store._write_connection.execute("SELECT count(*) FROM events").get)


def test_a_drained_spool_gives_its_wal_back(tmp_path: Path) -> None:
    # The server's appends never checkpoint (checkpoint_on_append=False); once the writer has
    # drained the spool, the next append starts the WAL over, cut to the spool's size limit.
    wal = tmp_path / "spool" / "cache.db-wal"
    server = Spool(tmp_path / "spool", checkpoint_on_append=False)
    store = SQLiteWriter(tmp_path / "store.db")
    resources = WriterResources(Spool(tmp_path / "spool"), Spool(tmp_path / "quarantine"), lambda: store)
    try:
        for start in range(0, 384, 8):
            server.append_many([_entry(n, padding=16_000) for n in range(start, start + 8)])  # 6 MiB
        assert wal.stat().st_size > 6 * MiB
        for _ in range(100):
            if drain_batch(resources, 50, 20_000).entries == 0:
                break
        server.append_many([_entry(1_000)])
        assert wal.stat().st_size <= 4 * MiB
        assert _stored(store) == 384
        assert [key for key, _ in server.peek(10)] and server.count() == 1
    finally:
        store.close()
        server.close()


class _TimedExecutor:
    """A ThreadExecutor that notes when each drained batch started and ended, and its entries."""

    def __init__(self, resources: WriterResources, after_first_batch: Callable[[], object] | None = None) -> None:
        self._executor = ThreadExecutor(resources)
        self.batches: list[tuple[float, float, int]] = []
        self._after_first_batch = after_first_batch

    async def execute(self, fn: Callable[[WriterResources, *Args], T], *args: *Args) -> T:
        started = time.monotonic()
        result: T = await self._executor.execute(fn, *args)
        if isinstance(result, DrainResult):
            self.batches.append((started, time.monotonic(), result.entries))
            if len(self.batches) == 1 and self._after_first_batch is not None:
                self._after_first_batch()  # as if spooled while the batch was being written
        return result

    async def close(self) -> None:
        await self._executor.close()


async def test_a_drain_that_caught_up_waits_before_the_next_batch(tmp_path: Path) -> None:
    # A backlog goes in full batches one after the other; the batch that held the rest of the
    # spool ends the drain for a moment (old: the next batch at once, to find a few entries
    # or none: at 1 event per request, two thirds of the writer's CPU went to such batches).
    server = Spool(tmp_path / "spool", checkpoint_on_append=False)
    server.append_many([_entry(n) for n in range(25)])
    store = SQLiteWriter(tmp_path / "store.db")
    executor = _TimedExecutor(WriterResources(Spool(tmp_path / "spool"), Spool(tmp_path / "quarantine"), lambda: store))
    writer = WriteScheduler(executor, flush_period_s=3600.0, batch_max_entries=10, batch_max_events=20_000)
    writer.start()
    try:

        async def caught_up_and_looked_again() -> bool:
            return len(executor.batches) >= 4

        await eventually_async(caught_up_and_looked_again, what="the backlog drained and the spool looked at again")
        assert [entries for _, _, entries in executor.batches[:4]] == [10, 10, 5, 0]
        caught_up_ended, next_started = executor.batches[2][1], executor.batches[3][0]
        assert next_started - caught_up_ended >= CATCH_UP_PAUSE_S * 0.9
        assert _stored(store) == 25
    finally:
        await writer.close(drain_timeout_s=30)
        server.close()


async def test_what_arrives_during_a_drain_is_stored_without_a_flush(tmp_path: Path) -> None:
    # The flush period is an hour: entries spooled while a batch that caught up was being
    # written are still stored within moments, by the drain after the pause.
    server = Spool(tmp_path / "spool", checkpoint_on_append=False)
    server.append_many([_entry(n) for n in range(5)])
    store = SQLiteWriter(tmp_path / "store.db")
    executor = _TimedExecutor(
        WriterResources(Spool(tmp_path / "spool"), Spool(tmp_path / "quarantine"), lambda: store),
        after_first_batch=lambda: server.append_many([_entry(n) for n in range(5, 8)]),
    )
    writer = WriteScheduler(executor, flush_period_s=3600.0, batch_max_entries=10, batch_max_events=20_000)
    writer.start()
    try:

        async def all_stored() -> bool:
            return _stored(store) == 8 and len(executor.batches) >= 2

        await eventually_async(all_stored, what="the entries spooled during the first batch stored")
        assert [entries for _, _, entries in executor.batches[:2]] == [5, 3]
    finally:
        await writer.close(drain_timeout_s=30)
        server.close()
