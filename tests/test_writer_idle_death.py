"""A writer process that dies while idle (kill -9, the OOM killer) does not cost the shutdown's
final drain: the first call meets the dead pool and fails, the writer is replaced, and the
drain goes on with the new process, so the spool is empty when the server exits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from tests.helpers import eventually
from tests.test_writer import entry, writer_process_killed
from tlytics.spool import Spool
from tlytics.store import SQLiteStore


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie until the pool reaps it: dead all the same.
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().split(") ", 1)[1].startswith("Z")


async def test_the_final_drain_outlives_a_writer_that_died_while_idle(
    tmp_path: Path, open_store: Callable[[Path], SQLiteStore], open_spool: Callable[[Path], Spool]
) -> None:
    spool = open_spool(tmp_path / "spool")
    writer, first_pid = await writer_process_killed(tmp_path, spool)
    eventually(lambda: _gone(first_pid), timeout_s=30, what="the writer process to die")
    spool.append_many([entry(10) for _ in range(4)])  # acknowledged while the writer lay dead
    with capture_logs() as logs:
        await writer.close(drain_timeout_s=60)
    assert any(log["event"] == "writer_process_died_restarting" for log in logs)
    assert spool.count() == 0
    assert open_store(tmp_path / "a.db").count() == 70
