"""`tlytics --workers N`: N ingest processes on one port, each with its own spool, one writer
for all (issue 22). Real servers on loopback; durability proved by SIGKILL and a count of what
was stored, exactly once."""

from __future__ import annotations

import os
import random
import signal
import socket
import uuid
from pathlib import Path

import pytest

from tests.helpers import Sender, ServerProcess, assert_exactly_once, eventually, http_json
from tlytics.ingest.supervisor import WorkersUnsupported, reserve_port
from tlytics.spool import Spool

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")


def _worker_pids(server: ServerProcess) -> dict[int, int]:
    """Each worker's newest pid, from its `worker_listening` lines."""
    return {r["worker"]: r["pid"] for r in server.log_records() if r.get("event") == "worker_listening"}


def _writer_pids(server: ServerProcess) -> list[int]:
    return [r["pid"] for r in server.log_records() if r.get("event") == "writer_started"]


def _spooled(spool_dir: Path) -> int:
    spool = Spool(spool_dir)
    try:
        return spool.count()
    finally:
        spool.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not reaped yet) is gone for our purpose.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ", 1)[1].startswith("Z"))


def _post(server: ServerProcess, key: str, count: int) -> set[str]:
    """`count` one-event requests, each on a new connection (so the kernel spreads them over
    the workers); returns the ids acknowledged."""
    acknowledged = set()
    for _ in range(count):
        event_id = str(uuid.uuid4())
        status, _ = http_json("POST", f"{server.url}/events", [{"id": event_id, "key": key}])
        if status == 200:
            acknowledged.add(event_id)
    return acknowledged


def _post_until_every_worker_spool_holds(server: ServerProcess, spool_dir: Path, workers: int, key: str) -> set[str]:
    """Post one-event requests until each worker's spool holds some (the writer waits an hour)."""
    acknowledged: set[str] = set()
    for _ in range(40):
        acknowledged |= _post(server, key, 10)
        if all(_spooled(spool_dir / f"worker-{index}") for index in range(workers)):
            return acknowledged
    raise AssertionError(f"400 requests did not reach all of {workers} workers: {server.log()[-2000:]}")


def test_events_posted_over_many_connections_are_spread_over_both_workers_and_stored_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "a.db.spool"
    server = ServerProcess(tmp_path / "a.db", flush="1h", extra_args=["--workers", "2"]).start()
    try:
        # The writer waits an hour: what each worker acknowledged stays in its own spool.
        acknowledged = _post_until_every_worker_spool_holds(server, spool_dir, 2, "spread")
        served = {
            r["worker"] for r in server.log_records() if r.get("event") == "request" and r.get("path") == "/events"
        }
        assert served == {0, 1}
        # /health, on whichever worker it reaches, counts every worker's spool.
        spooled = sum(_spooled(spool_dir / f"worker-{index}") for index in range(2))
        for _ in range(4):
            _, health = http_json("GET", f"{server.url}/health")
            assert health["spool_entries"] == spooled
        sender = Sender(server.url, threads=4, batch_size=20).start()
        sender.wait_acknowledged()
        eventually(lambda: len(sender.acknowledged) >= 2_000, what="2,000 events acknowledged")
        sender.stop()
        # A clean stop: every worker drains, then the writer drains what is left.
        assert server.stop() == 0
        assert all(_spooled(spool_dir / f"worker-{index}") == 0 for index in range(2))
        server.start()
        assert_exactly_once(server, acknowledged | sender.acknowledged, acknowledged | sender.sent)
    finally:
        server.kill()


def test_kill_9_of_a_worker_mid_load_loses_nothing_and_it_comes_back(tmp_path: Path, rng: random.Random) -> None:
    server = ServerProcess(tmp_path / "a.db", extra_args=["--workers", "2"]).start()
    try:
        pids = _worker_pids(server)  # the server says `listening` once both workers do
        assert set(pids) == {0, 1}
        victim = rng.choice([0, 1])
        sender = Sender(server.url, threads=4, batch_size=20).start()
        sender.wait_acknowledged()
        eventually(lambda: len(sender.acknowledged) >= 500, what="500 events acknowledged")
        os.kill(pids[victim], signal.SIGKILL)
        eventually(
            lambda: _worker_pids(server)[victim] != pids[victim], timeout_s=60.0, what=f"worker {victim} restarted"
        )
        # Threads of the first sender whose connection the kill cut stopped: a second load
        # proves the server answers on, with the restarted worker among those answering.
        again = Sender(server.url, threads=4, batch_size=20).start()
        again.wait_acknowledged()
        eventually(lambda: len(again.acknowledged) >= 500, what="500 more events acknowledged")
        sender.stop()
        again.stop()
        assert "worker_died" in server.log()
        assert_exactly_once(server, sender.acknowledged | again.acknowledged, sender.sent | again.sent)
    finally:
        server.kill()


def test_kill_9_of_the_writer_mid_load_loses_nothing(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "a.db", extra_args=["--workers", "2"]).start()
    try:
        writer = eventually(lambda: _writer_pids(server), what="the writer started")[-1]
        sender = Sender(server.url, threads=4, batch_size=20).start()
        sender.wait_acknowledged()
        eventually(lambda: len(sender.acknowledged) >= 500, what="500 events acknowledged")
        os.kill(writer, signal.SIGKILL)
        eventually(lambda: _writer_pids(server)[-1] != writer, timeout_s=60.0, what="a new writer")
        acknowledged = len(sender.acknowledged)
        eventually(lambda: len(sender.acknowledged) >= acknowledged + 500, what="500 more events acknowledged")
        sender.stop()
        assert_exactly_once(server, sender.acknowledged, sender.sent)
    finally:
        server.kill()


def test_an_erasure_waits_for_what_the_other_worker_still_holds(tmp_path: Path) -> None:
    spool_dir = tmp_path / "a.db.spool"
    server = ServerProcess(tmp_path / "a.db", flush="1h", extra_args=["--workers", "2"]).start()
    try:
        # Both workers hold events of the key in their spools (the writer waits an hour), so
        # whichever worker the erasure comes to, the other one holds some of them.
        erased = _post_until_every_worker_spool_holds(server, spool_dir, 2, "erase_me")
        kept = _post(server, "keep_me", 10)
        status, body = http_json("DELETE", f"{server.url}/events?key=erase_me")
        assert status == 200, body
        assert body == {"deleted": len(erased)}
        server.wait_drained()
        # Stored: only the events of the other key; and still so after a restart replays the spools.
        assert set(server.stored_ids()) == kept
        assert server.stop() == 0
        server.start()
        server.wait_drained()
        assert set(server.stored_ids()) == kept
    finally:
        server.kill()


def test_a_restart_with_fewer_workers_drains_the_spools_of_those_gone(tmp_path: Path) -> None:
    spool_dir = tmp_path / "a.db.spool"
    server = ServerProcess(tmp_path / "a.db", flush="1h", extra_args=["--workers", "3"]).start()
    try:
        acknowledged = _post_until_every_worker_spool_holds(server, spool_dir, 3, "orphaned")
        pids = _worker_pids(server)
        server.kill()  # the supervisor: its workers and its writer die with it
        eventually(lambda: not any(_alive(pid) for pid in pids.values()), what="the workers died with the server")
        assert _spooled(spool_dir / "worker-2") > 0
        server.extra_args = ["--workers", "2"]
        server.start()
        server.wait_drained()
        assert_exactly_once(server, acknowledged, acknowledged)
        assert _spooled(spool_dir / "worker-2") == 0
        # And down to a single process (its writer on a thread, the other kind of writer),
        # from two workers killed with events in both spools.
        acknowledged |= _post_until_every_worker_spool_holds(server, spool_dir, 2, "orphaned_again")
        pids = _worker_pids(server)
        server.kill()
        eventually(lambda: not any(_alive(pid) for pid in pids.values()), what="the workers died with the server")
        server.extra_args = ["--writer", "thread"]
        server.flush = "100ms"  # what is posted after its first drain is written too
        server.start()
        acknowledged |= _post(server, "single", 10)
        assert_exactly_once(server, acknowledged, acknowledged)
        assert [_spooled(spool_dir / f"worker-{index}") for index in range(3)] == [0, 0, 0]
    finally:
        server.kill()


def test_a_second_server_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "a.db", extra_args=["--workers", "2"]).start()
    try:
        second = ServerProcess(tmp_path / "a.db", extra_args=["--workers", "2"])
        with pytest.raises(RuntimeError, match="in use by another Tlytics server"):
            second.start()
        assert http_json("GET", f"{server.url}/health")[0] == 200
    finally:
        server.kill()


def test_more_than_one_worker_is_refused_where_so_reuseport_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(WorkersUnsupported, match="--workers above 1 needs SO_REUSEPORT"):
        reserve_port("127.0.0.1", 0)


def test_a_port_another_server_listens_on_is_refused(tmp_path: Path) -> None:
    """Even one that set SO_REUSEPORT too: the workers would share its port, splitting the
    traffic with an unrelated server."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        server = ServerProcess(tmp_path / "a.db", port=other.getsockname()[1], extra_args=["--workers", "2"])
        with pytest.raises(RuntimeError, match="exited with 1"):
            server.start()
        assert "Address already in use" in server.log()
