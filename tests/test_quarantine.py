"""Quarantined spool entries (unreadable, set aside by the writer) are visible to an operator:
/health lists them as a problem while ingest still works (200), /metrics counts them."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.helpers import http_json
from tlytics.spool import Spool


def test_quarantined_entries_show_in_health_and_metrics(server_factory: Any, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "q.db.spool")
    good_id = uuid.uuid4().hex
    spool.append(b'{"received_at": 1, "events": [["' + good_id.encode() + b'", "k", 5, {}]]}')
    spool.append(b'{"received_at": 1, "events": [["trunc')  # a torn write
    spool.close()
    server = server_factory(tmp_path / "q.db", flush="50ms").start()  # the writer in its own process

    deadline = time.monotonic() + 30
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, health = http_json("GET", server.url + "/health")
        if health.get("quarantined_entries"):
            break
        time.sleep(0.05)
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
