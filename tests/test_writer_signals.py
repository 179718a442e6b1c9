"""The writer process and the stop signals of its process group: a group signal that comes
while the writer process (or CPython's resource tracker) is still starting neither kills it nor
costs the final drain; and an error the server cannot unpickle is not taken for the writer's
death (it broke the process pool: "terminated abruptly", the writer replaced)."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers import eventually, http_json
from tlytics.cli import parse_settings
from tlytics.errors import ReadTimedOut, StoreError
from tlytics.writer import ProcessExecutor
from tlytics.writer.resources import WriterResources

# Run by every Python process of a test server (on its PYTHONPATH): the writer process and the
# resource tracker wait at their very start, before any of their own code ran, until the test
# lets them go; each says it is waiting with a file. So a signal sent meanwhile lands, for
# sure, in the window where only the mask they were spawned with protects them.
pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc (Linux)")

_HOLD_AT_START = textwrap.dedent(
    """
    import os, time
    with open("/proc/self/cmdline", "rb") as _cmdline:  # sys.argv lacks the -c command
        _command = _cmdline.read().decode(errors="replace")
    _kind = "writer" if "--multiprocessing-fork" in _command else "tracker" if "resource_tracker" in _command else None
    if _kind is not None:
        _hold = os.environ["TLYTICS_TEST_HOLD_DIR"]
        open(os.path.join(_hold, f"{_kind}-{os.getpid()}"), "w").close()
        _deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(_hold, "release")) and time.monotonic() < _deadline:
            time.sleep(0.01)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_group_signal_while_the_writer_starts_leaves_it_to_drain(
    server_factory: Any, tmp_path: Path, open_store: Any, open_spool: Any, sig: int
) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(_HOLD_AT_START)
    db_path = tmp_path / "a.db"
    server = server_factory(
        db_path, flush="1h", extra_env={"PYTHONPATH": str(hold), "TLYTICS_TEST_HOLD_DIR": str(hold)}
    ).start()
    status, _ = http_json("POST", server.url + "/events", [{"key": "early"}] * 5)
    assert status == 200
    eventually(
        lambda: {path.name.split("-")[0] for path in hold.iterdir()} >= {"writer", "tracker"},
        timeout_s=60,
        what="the writer process and the resource tracker waiting at their start",
    )
    assert server.process is not None
    group = os.getpgid(server.process.pid)
    # Every signal a terminal or systemd sends the group, the stop signal last.
    os.killpg(group, signal.SIGHUP)
    os.killpg(group, sig)
    time.sleep(0.2)  # not a wait for a condition: the signals' delivery has no visible sign
    (hold / "release").touch()
    assert server.process.wait(timeout=60) == 0, server.log()[-3000:]
    log = server.log()
    for sign in ("Traceback", "KeyboardInterrupt", "writer_process_died", "writer_batch_failed"):
        assert sign not in log, log[-3000:]
    assert open_spool(db_path.with_name(db_path.name + ".spool")).count() == 0, "the final drain did not run"
    assert open_store(db_path).count() == 5


def _raises_an_error_needing_keywords(_resources: WriterResources) -> None:
    raise ReadTimedOut("ran out of time", budget_s=1.0)  # unpickling calls ReadTimedOut(message)


def _pid(_resources: WriterResources) -> int:
    return os.getpid()


async def test_an_error_the_server_cannot_unpickle_is_not_taken_for_a_dead_writer(tmp_path: Path) -> None:
    settings, _ = parse_settings(["--db", str(tmp_path / "a.db")], {})
    executor = ProcessExecutor(settings)
    try:
        writer_pid = await executor.execute(_pid)
        with capture_logs() as logs:
            with pytest.raises(StoreError, match="ReadTimedOut: ran out of time"):
                await executor.execute(_raises_an_error_needing_keywords)
            assert await executor.execute(_pid) == writer_pid  # the same writer, at work
        assert not any(entry["event"] == "writer_process_died_restarting" for entry in logs)
    finally:
        await executor.close()
