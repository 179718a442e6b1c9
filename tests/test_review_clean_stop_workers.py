"""A clean stop leaves the SQLite store as one file in every process model, not only with one
worker: with `--workers 2` each worker closes its own readers (two folds of the WAL at
about the same moment), and the `.db` copied alone after the stop must hold every event."""

from __future__ import annotations

import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import http_json


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(("-wal", "-shm")))


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_a_sigterm_stopped_server_with_two_workers_leaves_one_complete_file(
    writer: str, server_factory: Any, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    server = server_factory(store / "analytics.db", extra_args=["--writer", writer, "--workers", "2"]).start()
    sent = [{"id": str(uuid.uuid4()), "key": "before_stop", "data": {"n": n}} for n in range(20)]
    for event in sent:
        status, _ = http_json("POST", f"{server.url}/events", [event])
        assert status == 200
    server.wait_drained()
    for _ in range(8):  # both workers' readers open connections
        status, page = http_json("GET", f"{server.url}/view")
        assert status == 200 and page["total"] == len(sent)

    assert server.stop(signal.SIGTERM) == 0

    assert leftovers(store) == []
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(store / "analytics.db", copy / "analytics.db")
    again = server_factory(copy / "analytics.db").start()
    status, page = http_json("GET", f"{again.url}/view")
    assert status == 200 and page["total"] == len(sent)
