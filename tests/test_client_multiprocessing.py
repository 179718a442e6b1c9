"""The client in multiprocessing children (issue 18, item 3): children started with fork leave
through os._exit(), which skips atexit; their last events (all of them, for a child that
emits and returns) were lost, with exit code 0 and nothing counted. Now multiprocessing's own
finalizers deliver them, or at least put them on disk for the next run. Checked with real
processes, fork and spawn, Process and Pool, on a real server: every event stored exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.client_multiprocessing import CHILDREN, EVENTS
from tests.helpers import ServerProcess, fast_config
from tests.shared_server import StoredSince
from tlytics import Client

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", ["process", "pool"])
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_children_that_emit_and_return_lose_nothing(
    start_method: str, kind: str, shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    server = shared_server
    spool, out = tmp_path / "spool", tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "tests.client_multiprocessing", server.url, str(spool), str(out), start_method, kind],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    emitted = [event_id for path in out.iterdir() for event_id in path.read_text().split()]
    assert len(emitted) == CHILDREN * EVENTS + 1
    # What the application left on disk, the next run delivers; nothing may be missing.
    with Client(fast_config(server.url, spool)) as next_run:
        assert next_run.flush(timeout=60) is True
    server.wait_drained()
    stored = stored_since.ids()
    assert len(stored) == len(set(stored)), "stored twice"
    assert set(stored) == set(emitted), f"{len(set(emitted) - set(stored))} events lost"
