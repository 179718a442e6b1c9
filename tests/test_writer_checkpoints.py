"""When the writer checkpoints the spool's WAL (issue 22): not after every batch, but once a
drain finds the spool empty; while entries wait, its removals checkpoint once the WAL passes
the spool's WAL size limit, which stays within the disk reserve."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlytics.ingest.settings import Settings
from tlytics.spool import Spool
from tlytics.store import SQLiteWriter
from tlytics.writer import WriterResources, drain_batch
from tlytics.writer.process import writer_resources

MiB = 1024 * 1024


def _entry(n: int, events: int = 1, padding: int = 0) -> bytes:
    rows = ",".join(
        f'["{n * 1000 + i:032x}","k",{1_700_000_000_000_000 + n},{{"p":"{"x" * padding}"}}]' for i in range(events)
    )
    return f'{{"received_at":1700000000000000,"events":[{rows}]}}'.encode()


def _stored(store: SQLiteWriter) -> int:
    return int(store._write_connection.execute("SELECT count(*) FROM events").get)


def test_batches_while_entries_wait_leave_the_checkpoint_to_the_drained_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each checkpoint copied pages the next batches rewrote: one per batch was a third of the
    # writer's CPU at 1 event per request. Now only the batch that finds the spool empty does.
    server = Spool(tmp_path / "spool", checkpoint_on_append=False)
    server.append_many([_entry(n) for n in range(30)])
    store = SQLiteWriter(tmp_path / "store.db")
    resources = WriterResources(Spool(tmp_path / "spool"), Spool(tmp_path / "quarantine"), lambda: store)
    checkpoints: list[int] = []
    checkpoint = Spool.checkpoint

    def counted(spool: Spool) -> None:
        checkpoints.append(spool.count())
        checkpoint(spool)

    monkeypatch.setattr(Spool, "checkpoint", counted)
    try:
        for _ in range(3):
            assert drain_batch(resources, 10, 20_000).entries == 10
        assert checkpoints == []
        assert drain_batch(resources, 10, 20_000).entries == 0
        assert checkpoints == [0]
        assert _stored(store) == 30
    finally:
        store.close()
        server.close()


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


def test_the_writers_removals_keep_the_wal_within_the_disk_reserve(tmp_path: Path) -> None:
    # A backlog drained batch after batch never finds the spool empty: the removals' own
    # commits checkpoint, once the WAL passes the WAL size limit the reserve allows (a
    # checkpoint needs as much disk again; at SQLite's default, 4 MiB, it would outgrow a
    # 1 MiB reserve).
    reserve = 1 * MiB
    wal = tmp_path / "spool" / "cache.db-wal"
    settings = Settings(db_path=tmp_path / "a.db", spool_dir=tmp_path / "spool", spool_min_free_bytes=reserve)
    server = Spool(tmp_path / "spool", checkpoint_on_append=False, min_free_bytes=reserve)
    for start in range(0, 512, 8):
        server.append_many([_entry(n, padding=16_000) for n in range(start, start + 8)])  # 8 MiB
    server.checkpoint()
    server.append_many([_entry(10_000)])  # the WAL starts over, cut to its limit
    resources = writer_resources(settings)
    largest = 0
    try:
        for _ in range(100):
            result = drain_batch(resources, 8, 20_000)
            largest = max(largest, wal.stat().st_size)
            if result.entries == 0:
                break
        assert resources.spool.count() == 0
        assert largest <= reserve
    finally:
        resources.close_store()
        resources.spool.close()
        resources.quarantine.close()
        server.close()
