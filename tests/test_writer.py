"""The writer: drains spool into store in batches, never drops a failing batch."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.helpers import eventually, eventually_async, held_write_lock, http_json
from tlytics.errors import StoreError
from tlytics.ids import uuid7_bytes
from tlytics.ingest import Settings
from tlytics.ingest.state import WRITE_SCHEDULER
from tlytics.spool import Spool
from tlytics.store import EventFilter, SQLiteReader, SQLiteStore, SQLiteWriter, StoreRow
from tlytics.writer import ErasureIncomplete, ProcessExecutor, ThreadExecutor, WriterResources, WriteScheduler


def entry(n_events: int, key: str = "k") -> bytes:
    events = [[uuid7_bytes().hex(), key, 1_000_000 + i, {"i": i}] for i in range(n_events)]
    return orjson.dumps({"received_at": 5, "events": events})


class FlakyStore(SQLiteWriter):
    """The store's write side, failing its first `failures` inserts, like a locked or full disk
    would. `count()` reads what is stored, through a reader of its own."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.insert_sizes: list[int] = []

    def insert(self, rows: Sequence[StoreRow]) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database is locked (injected)")
        self.insert_sizes.append(len(rows))
        return super().insert(rows)

    def count(self) -> int:
        reader = SQLiteReader(self.path)
        try:
            return reader.count()
        finally:
            reader.close()


@pytest.fixture
def make_writer(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> Callable[..., tuple[WriteScheduler, Spool, Spool]]:
    """A WriteScheduler on a thread over `store` and a spool under tmp_path; returns it with the
    spool and the quarantine, which are closed after the test (the store by writer.close())."""

    def make(store: SQLiteWriter, batch_max_events: int = 5000, **options: Any) -> tuple[WriteScheduler, Spool, Spool]:
        spool = open_spool(tmp_path / "spool")
        quarantine = open_spool(tmp_path / "spool" / "quarantine")
        options.setdefault("flush_period_s", 3600.0)
        executor = ThreadExecutor(WriterResources(spool, quarantine, lambda: store))
        return (
            WriteScheduler(executor, batch_max_entries=1_000, batch_max_events=batch_max_events, **options),
            spool,
            quarantine,
        )

    return make


async def test_failing_batch_is_kept_logged_and_retried(
    tmp_path: Path, make_writer: Callable[..., tuple[WriteScheduler, Spool, Spool]]
) -> None:
    store = FlakyStore(tmp_path / "a.db", failures=2)
    writer, spool, _ = make_writer(store, flush_period_s=0.05, retry_delay_max_s=0.05)
    spool.append_many([entry(3), entry(4)])
    with capture_logs() as logs:
        writer.start()

        async def seven_stored() -> bool:
            return store.count() >= 7

        await eventually_async(seven_stored, interval_s=0.02, what="the 7 events stored after two failures")
        await writer.close(drain_timeout_s=5)
    assert store.count() == 7
    assert spool.count() == 0
    failures = [log for log in logs if log["event"] == "writer_batch_failed"]
    assert len(failures) == 2
    assert "injected" in failures[0]["error"]


async def test_spool_entries_stay_until_store_commits(
    tmp_path: Path, make_writer: Callable[..., tuple[WriteScheduler, Spool, Spool]]
) -> None:
    store = FlakyStore(tmp_path / "a.db", failures=1)
    writer, spool, _ = make_writer(store)
    spool.append(entry(5))
    with capture_logs():
        assert await writer.flush(timeout_s=5) is False
    assert spool.count() == 1  # the failed batch is still there
    assert store.count() == 0
    assert await writer.flush(timeout_s=5) is True
    assert (spool.count(), store.count()) == (0, 5)
    await writer.close(drain_timeout_s=1)


async def test_drains_in_bounded_transactions(
    tmp_path: Path, make_writer: Callable[..., tuple[WriteScheduler, Spool, Spool]]
) -> None:
    store = FlakyStore(tmp_path / "a.db", failures=0)
    writer, spool, _ = make_writer(store, batch_max_events=1000)
    spool.append_many([entry(100) for _ in range(35)])
    assert await writer.flush(timeout_s=30)
    await writer.close(drain_timeout_s=1)
    assert store.count() == 3500
    assert store.insert_sizes == [1000, 1000, 1000, 500]


async def test_corrupt_entry_is_quarantined_not_a_wedge(
    tmp_path: Path, make_writer: Callable[..., tuple[WriteScheduler, Spool, Spool]]
) -> None:
    store = FlakyStore(tmp_path / "a.db", failures=0)
    writer, spool, quarantine = make_writer(store)
    spool.append_many([entry(2), b"\x00garbage{", orjson.dumps({"events": "wrong shape"}), entry(3)])
    with capture_logs() as logs:
        assert await writer.flush(timeout_s=5)
    await writer.close(drain_timeout_s=1)
    assert store.count() == 5
    assert spool.count() == 0
    assert quarantine.peek(10)[0][1] == b"\x00garbage{"
    assert quarantine.count() == 2
    assert sum(1 for log in logs if log["event"] == "spool_entry_quarantined") == 2


async def test_periodic_flush_stores_without_being_asked(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    app = make_app(flush_period_s=0.1)
    client = await aiohttp_client(app)
    await client.post("/events", json=[{"key": "a"}] * 3)

    async def three_stored() -> bool:
        return (await (await client.get("/view")).json())["total"] == 3

    await eventually_async(three_stored, what="/view showing the 3 events")


async def test_backlog_threshold_wakes_writer_before_its_period(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    app = make_app(backlog_threshold_events=50)  # the flush period is an hour
    client = await aiohttp_client(app)
    scheduler = app[WRITE_SCHEDULER]

    async def start_drain_done() -> bool:
        # The writer drains once at start (what a crash left); on a busy machine that drain
        # can begin after the first post and store it, which is not the threshold's doing.
        return scheduler.worker_pid != 0

    await eventually_async(start_drain_done, what="the writer's drain at start")
    await client.post("/events", json=[{"key": "a"}] * 10)
    # A window in which a wrong wake would store them (not a wait for something that must
    # happen: a slow machine can only hide such a defect here, never fail a correct writer).
    await asyncio.sleep(0.3)
    assert (await (await client.get("/view")).json())["total"] == 0  # below the threshold
    await client.post("/events", json=[{"key": "a"}] * 60)

    async def total_once_all_stored() -> int | None:
        total: int = (await (await client.get("/view")).json())["total"]
        return total if total >= 70 else None

    assert await eventually_async(total_once_all_stored, what="/view showing the 70 events") == 70


async def test_shutdown_drains_what_is_spooled(
    aiohttp_client: Any,
    settings: Settings,
    make_app: Callable[..., web.Application],
    open_store: Callable[[Path], SQLiteStore],
    open_spool: Callable[[Path], Spool],
) -> None:
    client = await aiohttp_client(make_app(writer_process=True))  # the server's writer, in its own process
    for _ in range(5):
        assert (await client.post("/events", json=[{"key": "a"}] * 20)).status == 200
    await client.close()  # runs the cleanup contexts, as SIGTERM would
    assert open_store(settings.db_path).count() == 100
    assert open_spool(settings.resolved_spool_dir).count() == 0


def process_writer(tmp_path: Path) -> WriteScheduler:
    """A WriteScheduler whose functions run in a writer process, on the store and spool under tmp_path."""
    settings = Settings(db_path=tmp_path / "a.db", spool_dir=tmp_path / "spool")
    return WriteScheduler(ProcessExecutor(settings), flush_period_s=3600, batch_max_entries=1000, batch_max_events=1000)


async def writer_process_killed(tmp_path: Path, spool: Spool) -> tuple[WriteScheduler, int]:
    """A process writer that stored 3 entries of 10 events, then its writer process killed
    (kill -9); and that process's pid."""
    spool.append_many([entry(10) for _ in range(3)])
    writer = process_writer(tmp_path)
    assert await writer.flush(timeout_s=60)
    first_pid = writer.worker_pid
    os.kill(first_pid, signal.SIGKILL)
    return writer, first_pid


async def test_writer_process_drains_on_another_core(
    tmp_path: Path, open_store: Callable[[Path], SQLiteStore], open_spool: Callable[[Path], Spool]
) -> None:
    spool = open_spool(tmp_path / "spool")
    spool.append_many([entry(100) for _ in range(25)])
    writer = process_writer(tmp_path)
    assert await writer.flush(timeout_s=60)
    assert writer.worker_pid not in (0, os.getpid())
    await writer.close(drain_timeout_s=5)
    assert open_store(tmp_path / "a.db").count() == 2500
    assert spool.count() == 0


async def test_writer_process_survives_a_store_locked_while_it_starts(
    tmp_path: Path, open_store: Callable[[Path], SQLiteStore], open_spool: Callable[[Path], Spool]
) -> None:
    spool = open_spool(tmp_path / "spool")
    spool.append_many([entry(10) for _ in range(2)])
    db_path = tmp_path / "a.db"
    with sqlite3.connect(db_path) as connection:  # a new store, not migrated yet
        connection.execute("PRAGMA journal_mode=wal")
    writer = process_writer(tmp_path)
    with capture_logs() as logs:
        with held_write_lock(db_path):  # the writer process cannot migrate it meanwhile
            assert await writer.flush(timeout_s=60) is False
            assert "locked" in (writer.last_error or "")
        assert await writer.flush(timeout_s=60) is True  # retried once the lock is gone
    assert not any(log["event"] == "writer_process_died_restarting" for log in logs)
    await writer.close(drain_timeout_s=5)
    assert open_store(db_path).count() == 20


async def test_killed_writer_process_is_replaced_and_nothing_is_lost(
    tmp_path: Path, open_store: Callable[[Path], SQLiteStore], open_spool: Callable[[Path], Spool]
) -> None:
    spool = open_spool(tmp_path / "spool")
    writer, first_pid = await writer_process_killed(tmp_path, spool)
    spool.append_many([entry(10) for _ in range(3)])
    with capture_logs() as logs:
        assert await writer.flush(timeout_s=60) is False  # the dead pool fails one call...
        assert await writer.flush(timeout_s=60) is True  # ...and a new process takes over
    assert writer.worker_pid != first_pid
    assert any(log["event"] == "writer_process_died_restarting" for log in logs)
    await writer.close(drain_timeout_s=5)
    assert open_store(tmp_path / "a.db").count() == 60


async def test_an_erasure_whose_drain_fails_erases_nothing(
    tmp_path: Path, make_writer: Callable[..., tuple[WriteScheduler, Spool, Spool]]
) -> None:
    store = FlakyStore(tmp_path / "a.db", failures=0)
    writer, spool, _ = make_writer(store)
    spool.append(entry(3, key="erase_me"))
    assert await writer.flush(timeout_s=5)
    spool.append(entry(2, key="erase_me"))  # acknowledged, not stored yet
    store.failures = 1  # the drain before the erasure fails; the deletion alone would work
    with capture_logs(), pytest.raises(ErasureIncomplete) as raised:
        await writer.erase(EventFilter(keys=("erase_me",)))
    assert raised.value.deleted == 0
    assert store.count() == 3  # not a partial erasure that the next drain would undo
    assert await writer.erase(EventFilter(keys=("erase_me",))) == 5
    assert await writer.flush(timeout_s=5)
    assert (store.count(), spool.count()) == (0, 0)
    await writer.close(drain_timeout_s=1)


def test_a_store_locked_at_start_is_waited_for_while_ingest_goes_on(server_factory: Any, tmp_path: Path) -> None:
    db_path = tmp_path / "locked.db"
    SQLiteStore(db_path).close()  # the schema is current, as any earlier run leaves it
    events = [{"id": str(uuid.uuid4()), "key": "while_locked"} for _ in range(20)]
    with held_write_lock(db_path):
        server = server_factory(db_path, flush="100ms").start(wait_s=120)
        assert http_json("POST", server.url + "/events", events, timeout_s=60)[0] == 200

        # The writer process meets the lock and retries; nothing is stored meanwhile.
        def health_once_locked() -> dict[str, Any] | None:
            _, health = http_json("GET", server.url + "/health", timeout_s=60)
            return health if "locked" in (health["writer_last_error"] or "") else None

        health = eventually(health_once_locked, timeout_s=120, interval_s=0.1, what="the writer meeting the lock")
        assert health["status"] == "healthy" and health["spool_entries"] == 1, health
    server.wait_drained(timeout_s=120)
    assert sorted(server.stored_ids()) == sorted(event["id"] for event in events)
    # The spool empties in the writer process a moment before the server hears of the success.
    eventually(
        lambda: http_json("GET", server.url + "/health", timeout_s=60)[1]["writer_last_error"] is None,
        timeout_s=60,
        interval_s=0.1,
        what="/health forgetting the writer's last error",
    )
    assert "writer_process_died" not in server.log()


@pytest.mark.parametrize("where_it_runs", ["thread", "process"])
async def test_one_execute_call_runs_a_writer_function_in_a_thread_or_a_process(
    tmp_path: Path, where_it_runs: str, open_spool: Callable[[Path], Spool]
) -> None:
    from tlytics.writer.drain import drain_batch
    from tlytics.writer.retention import delete_expired

    spool = open_spool(tmp_path / "spool")
    spool.append_many([entry(4), entry(6)])  # timestamps 1 s after the epoch and on
    executor: ThreadExecutor | ProcessExecutor
    if where_it_runs == "thread":
        executor = ThreadExecutor(
            WriterResources(
                spool, open_spool(tmp_path / "spool" / "quarantine"), lambda: SQLiteWriter(tmp_path / "a.db")
            )
        )
    else:
        executor = ProcessExecutor(Settings(db_path=tmp_path / "a.db", spool_dir=tmp_path / "spool"))
    try:
        drained = await executor.execute(drain_batch, 1_000, 1_000)
        assert (drained.entries, drained.inserted) == (2, 10)
        assert (drained.pid == os.getpid()) == (where_it_runs == "thread")
        assert await executor.execute(delete_expired, 1_000_003, 2) == 2  # at most max_rows
        assert await executor.execute(delete_expired, 1_000_003, 100) == 4  # 1_000_000 … 1_000_002 twice
    finally:
        await executor.close()
    reader = SQLiteReader(tmp_path / "a.db")
    try:
        assert reader.count() == 4
    finally:
        reader.close()
