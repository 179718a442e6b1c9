"""A server that receives no events still backfills a newly declared property (issue 21): its
writer opens the store as it starts, not only once it has events to write."""

from __future__ import annotations

import uuid
from typing import Any, cast

from tests.helpers import eventually, http_json
from tlytics.store.sqlite import SQLiteReader
from tlytics.store.sqlite.properties import complete_properties

QUERY = "where=data.amount%3E=90&since=2025-01-01T00:00:00Z&until=2025-01-02T00:00:00Z"


def _total(server: Any) -> int:
    status, body = http_json("GET", f"{server.url}/view?{QUERY}")
    assert status == 200, body
    return cast(int, body["total"])


def test_a_server_that_receives_no_events_backfills_a_new_property(server_factory: Any) -> None:
    first = server_factory().start()
    events = [
        {"id": str(uuid.UUID(int=n + 1)), "key": "buy", "timestamp": f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z"}
        | {"data": {"amount": n % 100}}
        for n in range(500)
    ]
    assert http_json("POST", f"{first.url}/batch", {"events": events}, timeout_s=60)[0] == 200
    eventually(lambda: _total(first) == 50, timeout_s=60, what="the events written by the first run")
    assert first.stop() == 0

    # Restarted with a newly declared property, and not a single event posted.
    second = server_factory(first.db_path, extra_args=["--property", "data.amount"]).start()

    def backfill_ended() -> str | None:
        log = second.log()
        return next((line for line in log.splitlines() if "property_backfill_" in line and "started" not in line), None)

    # Watched in the server's log, not by polling the store file: the backfill's outcome is
    # what is asserted here, not how it copes with other connections meanwhile.
    ended = eventually(backfill_ended, timeout_s=60, what="the backfill's end, without any event")
    assert "property_backfill_done" in ended, second.log()[-3000:]
    reader = SQLiteReader(second.db_path)  # read-only: the server's writer is the only one
    try:
        assert set(complete_properties(reader._read_connection())) == {"amount"}
    finally:
        reader.close()
    assert _total(second) == 50  # answered from the declared values now
    assert second.stop() == 0
    assert "writer_store_not_open" not in second.log()
