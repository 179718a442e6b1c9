"""With `--workers N`, the same id acknowledged twice (first by one ingest worker, then by
another) is stored as first acknowledged: "a second event with the same id is a duplicate and
is ignored" (DESIGN §1). The writer drained the workers' spools one after the other in index
order, each in its own transaction, so a later duplicate waiting in worker 0's spool was stored
and the earlier event waiting in worker 1's was the one ignored; now a batch takes every
spool's oldest entries in order of acknowledgement, and nothing acknowledged after an entry it
has not read yet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from msgspec import Raw

from tlytics.spool import Spool
from tlytics.spool.entry import encode_spool_entry, group_spool_entries
from tlytics.store import SQLiteStore, SQLiteWriter
from tlytics.writer.drain import drain_batch
from tlytics.writer.resources import WriterResources

EVENT_ID = "0190f7c412347abc8def0123456789ab"


def _entry(received_at: int, key: str, event_id: str = EVENT_ID) -> bytes:
    return encode_spool_entry(received_at, [(event_id, key, received_at, Raw(f'{{"key":"{key}"}}'.encode()))])


def _other_id(n: int) -> str:
    return f"0190f7c412347abc8def{n:012x}"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[WriterResources, Spool, Spool]]:
    main, quarantine = Spool(tmp_path / "spool"), Spool(tmp_path / "spool" / "quarantine")
    first_worker, second_worker = Spool(tmp_path / "spool" / "worker-0"), Spool(tmp_path / "spool" / "worker-1")
    resources = WriterResources(
        main, quarantine, lambda: SQLiteWriter(tmp_path / "a.db"), worker_spools=[first_worker, second_worker]
    )
    yield resources, first_worker, second_worker
    resources.close_store()
    resources.close_worker_spools()
    main.close()
    quarantine.close()


def _stored(tmp_path: Path) -> list[tuple[str, str]]:
    store = SQLiteStore(tmp_path / "a.db")
    try:
        return [(event.id.replace("-", ""), event.key) for event in store.page(1, 100, ascending=True).events]
    finally:
        store.close()


def test_the_first_acknowledged_of_two_workers_duplicates_is_stored(
    tmp_path: Path, workers: tuple[WriterResources, Spool, Spool]
) -> None:
    resources, first_worker, second_worker = workers
    # Acknowledged first by worker 1, then (a retry with other content, or another sender
    # reusing the id) by worker 0, before the writer's next batch.
    second_worker.append_many([_entry(1_000, "first")])
    first_worker.append_many([_entry(2_000, "second")])
    result = drain_batch(resources, 1000, 1000)
    assert (result.entries, result.events, result.inserted, result.caught_up) == (2, 2, 1, True)
    assert _stored(tmp_path) == [(EVENT_ID, "first")]
    assert first_worker.count() == second_worker.count() == 0


def test_nothing_acknowledged_after_an_unread_entry_is_stored_before_it(
    tmp_path: Path, workers: tuple[WriterResources, Spool, Spool]
) -> None:
    resources, first_worker, second_worker = workers
    # Worker 1 has a backlog longer than a batch: the id's first event is in its third entry.
    second_worker.append_many([_entry(100, "a", _other_id(1)), _entry(200, "b", _other_id(2)), _entry(300, "first")])
    first_worker.append_many([_entry(400, "second")])
    batches = []
    for _ in range(10):  # bounded: two batches are enough
        result = drain_batch(resources, 2, 1000)
        batches.append(result.entries)
        if result.caught_up:
            break
    assert sum(batches) == 4
    assert first_worker.count() == second_worker.count() == 0
    assert _stored(tmp_path) == [(_other_id(1), "a"), (_other_id(2), "b"), (EVENT_ID, "first")]


def test_unreadable_entries_of_the_workers_spools_are_set_aside_and_the_rest_stored(
    tmp_path: Path, workers: tuple[WriterResources, Spool, Spool]
) -> None:
    resources, first_worker, second_worker = workers
    not_utf8 = _entry(20, "x", _other_id(2)).replace(b'"x"', b'"\xff"')
    bad_hex = encode_spool_entry(40, [("zz" * 16, "k", 40, Raw(b"{}"))])
    second_worker.append_many([group_spool_entries([_entry(10, "a", _other_id(1)), not_utf8])[0], b"not json"])
    first_worker.append_many([group_spool_entries([_entry(30, "b", _other_id(3)), bad_hex])[0]])
    result = drain_batch(resources, 1000, 1000)
    assert (result.entries, result.inserted, result.quarantined) == (2, 2, 3)
    assert _stored(tmp_path) == [(_other_id(1), "a"), (_other_id(3), "b")]
    assert sorted(value for _key, value in resources.quarantine.peek(10)) == sorted([not_utf8, b"not json", bad_hex])
    assert first_worker.count() == second_worker.count() == 0
