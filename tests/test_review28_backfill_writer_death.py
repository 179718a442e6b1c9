"""A declared property's backfill outlives a kill -9 of the writer process while it runs: the
writer that replaces it opens the store (which resumes the backfill from its last committed
chunk) without waiting for an event to write. It used to stay stopped on a server receiving
no events, every read of the property parsing the JSON until the next restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, cast

import apsw
import pytest

from tests.helpers import ServerProcess, eventually, http_json
from tests.test_declared_properties import made_amounts
from tlytics.store import SQLiteStore
from tlytics.store.sqlite import SQLiteReader
from tlytics.store.sqlite.properties import PropertyKeeper, complete_properties

QUERY = "where=data.amount%3E=2990&since=2025-01-01T00:00:00Z&until=2025-01-10T00:00:00Z"


def _writer_pids(server: ServerProcess) -> list[int]:
    return [int(record["pid"]) for record in server.log_records() if record.get("event") == "writer_started"]


def _writer_started_backfill(server: ServerProcess) -> bool:
    events = [record.get("event") for record in server.log_records()]
    return "writer_started" in events and "property_backfill_started" in events[events.index("writer_started") :]


def _logged(server: ServerProcess, event: str) -> bool:
    return any(record.get("event") == event for record in server.log_records())


def _declared_not_backfilled(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store of 3,000 events with `amount` declared and its backfill not begun."""
    store = SQLiteStore(path)
    store.insert(made_amounts(range(3_000)))
    store.close()
    with monkeypatch.context() as patched:
        patched.setattr(PropertyKeeper, "_backfill_all", lambda self: None)
        declaring = SQLiteStore(path, declared_properties=["amount"])
        declaring.close()


def test_a_backfill_resumes_after_the_writer_process_is_killed(
    server_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path = tmp_path / "analytics.db"
    _declared_not_backfilled(db_path, monkeypatch)
    # Another connection holds the store's write lock: the backfill's first chunk waits on it
    # (the writer opens the store with reads alone: the property is declared already).
    locker = apsw.Connection(str(db_path))
    locker.execute("BEGIN IMMEDIATE")
    try:
        server = server_factory(db_path, extra_args=["--property", "data.amount"]).start()
        # The server's own migration opens the store first (and stops its backfill on closing):
        # the writer's backfill is the one after the writer's start.
        eventually(lambda: _writer_started_backfill(server), timeout_s=60, what="the writer's backfill's start")
        first_pid = _writer_pids(server)[0]
        os.kill(first_pid, signal.SIGKILL)
        eventually(lambda: len(_writer_pids(server)) >= 2, timeout_s=60, what="a new writer process")
        assert not _logged(server, "property_backfill_done")
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    # No event is posted: the new writer must resume the backfill by itself.
    eventually(
        lambda: _logged(server, "property_backfill_done"),
        timeout_s=60,
        what="the backfill's end after the writer's death",
    )
    reader = SQLiteReader(db_path)  # read-only: the server's writer is the only one
    try:
        assert set(complete_properties(reader._read_connection())) == {"amount"}
    finally:
        reader.close()
    status, body = http_json("GET", f"{server.url}/view?{QUERY}")
    assert status == 200, body
    assert cast(int, body["total"]) == 10
    assert server.stop() == 0
