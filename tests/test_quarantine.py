"""Quarantined spool entries (unreadable, set aside by the writer) are visible to an operator:
/health lists them as a problem while ingest still works (200), /metrics counts them."""

from __future__ import annotations

import re
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.helpers import eventually, http_json
from tlytics.spool import Spool


def test_quarantined_entries_show_in_health_and_metrics(server_factory: Any, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "q.db.spool")
    good_id = uuid.uuid4().hex
    spool.append(b'{"received_at": 1, "events": [["' + good_id.encode() + b'", "k", 5, {}]]}')
    spool.append(b'{"received_at": 1, "events": [["trunc')  # a torn write
    spool.close()
    server = server_factory(tmp_path / "q.db", flush="50ms").start()  # the writer in its own process

    def health_with_quarantine() -> tuple[int, dict[str, Any]] | None:
        status, health = http_json("GET", server.url + "/health")
        return (status, health) if health.get("quarantined_entries") else None

    status, health = eventually(health_with_quarantine, what="/health reporting the quarantined entry")
    assert status == 200, health  # ingest works: no 503 that would take the server out of rotation
    assert health["status"] == "healthy"
    assert health["quarantined_entries"] == 1 and health["quarantine_bytes"] > 0
    (problem,) = health["problems"]
    assert "1 unreadable spool entries quarantined" in problem and "quarantine" in problem
    assert http_json("POST", server.url + "/events", [{"key": "still-works"}])[0] == 200

    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert re.search(r"^tlytics_quarantined_entries 1\.0$", metrics, re.MULTILINE), metrics
    assert re.search(r"^tlytics_quarantine_bytes [1-9]", metrics, re.MULTILINE)
