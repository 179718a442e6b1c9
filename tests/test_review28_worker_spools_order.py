"""With `--workers N`, the same id acknowledged twice (first by one ingest worker, then by
another) must be stored as first acknowledged: "a second event with the same id is a duplicate
and is ignored" (DESIGN §1). The writer drains the workers' spools one after the other in
index order, each in its own transaction, so a later duplicate waiting in worker 0's spool is
stored and the earlier event waiting in worker 1's is the one ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from msgspec import Raw

from tlytics.spool import Spool
from tlytics.spool.entry import encode_spool_entry
from tlytics.store import SQLiteStore, SQLiteWriter
from tlytics.writer.drain import drain_batch
from tlytics.writer.resources import WriterResources

EVENT_ID = "0190f7c412347abc8def0123456789ab"


@pytest.mark.xfail(
    strict=True,
    reason="drain_batch drains worker spools in index order, not in order of acknowledgement (received_at)",
)
def test_the_first_acknowledged_of_two_workers_duplicates_is_stored(tmp_path: Path) -> None:
    main, quarantine = Spool(tmp_path / "spool"), Spool(tmp_path / "spool" / "quarantine")
    first_worker, second_worker = Spool(tmp_path / "spool" / "worker-0"), Spool(tmp_path / "spool" / "worker-1")
    # Acknowledged first by worker 1, then (a retry with other content, or another sender
    # reusing the id) by worker 0, before the writer's next batch.
    second_worker.append_many([encode_spool_entry(1_000, [(EVENT_ID, "first", 10, Raw(b'{"n":1}'))])])
    first_worker.append_many([encode_spool_entry(2_000, [(EVENT_ID, "second", 20, Raw(b'{"n":2}'))])])
    resources = WriterResources(
        main, quarantine, lambda: SQLiteWriter(tmp_path / "a.db"), worker_spools=[first_worker, second_worker]
    )
    try:
        drain_batch(resources, 1000, 1000)
    finally:
        resources.close_store()
        resources.close_worker_spools()
        main.close()
        quarantine.close()
    store = SQLiteStore(tmp_path / "a.db")
    try:
        page = store.page(1, 10)
        assert [(event.key, event.data_json) for event in page.events] == [("first", '{"n":1}')]
    finally:
        store.close()
