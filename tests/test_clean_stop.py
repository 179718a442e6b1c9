"""A clean stop (SIGTERM, as `docker stop` and systemd send it) leaves the SQLite store as one
file: no `-wal` or `-shm` beside it. Left behind, they hold the last committed batches, so a
copy of the `.db` alone (a backup, a volume moved to another host) would miss them."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import http_json


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(("-wal", "-shm")))


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_sigterm_stopped_server_leaves_no_wal_or_shm_files(writer: str, server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(extra_args=["--writer", writer]).start()
    status, _ = http_json("POST", f"{server.url}/events", [{"key": "before_stop", "data": {"n": 1}}])
    assert status == 200
    server.wait_drained()
    status, page = http_json("GET", f"{server.url}/view")  # the readers have connections open too
    assert status == 200 and page["total"] == 1
    assert leftovers(tmp_path), "a running server has its WAL open: the test would prove nothing"

    assert server.stop(signal.SIGTERM) == 0

    assert leftovers(tmp_path) == []
    # Nothing was lost by folding the WAL in: the next server finds the event.
    again = server_factory().start()
    status, page = http_json("GET", f"{again.url}/view")
    assert status == 200 and [event["key"] for event in page["events"]] == ["before_stop"]
