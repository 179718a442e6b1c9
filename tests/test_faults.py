"""Fault injection against real server processes: repeated SIGKILL under load, a full disk,
a corrupted spool entry, a second server on the same store or spool, and idle connections."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_exactly_once, eventually, http_json, kill_under_load, server_argv
from tlytics.spool import Spool


def test_ten_random_sigkills_under_load_lose_and_duplicate_nothing(
    server_factory: Any, tmp_path: Path, rng: random.Random
) -> None:
    db_path = tmp_path / "faults.db"
    acknowledged: set[str] = set()
    sent: set[str] = set()
    rounds = 10
    for _ in range(rounds):
        server = server_factory(db_path, flush=rng.choice(["20ms", "100ms", "1s"])).start()
        batch_size = rng.choice([1, 20, 200])
        sender = kill_under_load(
            server, rng.uniform(0.1, 0.8), wait_acknowledged=False, threads=3, batch_size=batch_size
        )
        acknowledged |= sender.acknowledged
        sent |= sender.sent
    assert len(acknowledged) > rounds * 10
    final = server_factory(db_path, flush="20ms").start()
    assert_exactly_once(final, acknowledged, sent)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 12 MiB tmpfs: needs root (and mount rights), as CI and these machines have."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a disk-full test needs root to mount a size-limited tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_is_503_with_no_loss_and_recovers(server_factory: Any, tmp_path: Path, small_disk: Path) -> None:
    # The spool on the tiny disk, the store on the normal one: the spool fills, and the
    # writer (flush 1 s, slower than the load) frees it again.
    server = server_factory(
        tmp_path / "store.db",
        flush="1s",
        extra_args=["--spool", str(small_disk / "spool"), "--spool-min-free", "6MiB"],
    ).start()
    acknowledged: list[str] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and statuses.get(503, 0) < 5:
        ids = [str(uuid.uuid4()) for _ in range(50)]
        events = [{"id": i, "key": "fill", "data": {"pad": "x" * 2000}} for i in ids]
        status, body = http_json("POST", server.url + "/events", events)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            acknowledged.extend(ids)
        else:
            assert status == 503, body
            assert "retry later" in body["error"]
    assert statuses.get(503, 0) >= 5, f"the disk never filled: {statuses}"
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    server.wait_drained(timeout_s=60)
    stored = server.stored_ids()
    assert len(stored) == len(set(stored))
    assert set(acknowledged) <= set(stored)
    # Room came back: the server takes events again by itself.
    status, _ = http_json("POST", server.url + "/events", [{"key": "after"}])
    assert status == 200


def test_corrupted_spool_entry_is_quarantined_not_a_crash_loop(
    server_factory: Any, tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    db_path = tmp_path / "c.db"
    spool = Spool(tmp_path / "c.db.spool")
    good_id = str(uuid.uuid4())
    spool.append(b'{"received_at": 1, "events": [["' + uuid.UUID(good_id).hex.encode() + b'", "k", 5, {}]]}')
    spool.append(b'{"received_at": 1, "events": [["trunc')  # a torn write
    spool.append(b"\x00\x01 not json at all")
    spool.close()
    server = server_factory(db_path, flush="50ms").start()
    health = server.wait_drained()
    assert health["status"] == "healthy"
    assert server.stored_ids() == [good_id]
    assert open_spool(tmp_path / "c.db.spool" / "quarantine").count() == 2
    assert server.log().count("spool_entry_quarantined") == 2


def test_second_server_on_the_same_store_is_refused(server_factory: Any, tmp_path: Path) -> None:
    first = server_factory(tmp_path / "shared.db").start()
    second = subprocess.run(
        server_argv(0, "--db", str(tmp_path / "shared.db")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "in use by another Tlytics server" in second.stderr
    assert str(first.process.pid) in second.stderr  # type: ignore[union-attr]
    status, _ = http_json("GET", first.url + "/health")
    assert status == 200


def test_second_server_on_the_same_spool_with_another_store_is_refused(server_factory: Any, tmp_path: Path) -> None:
    # The first server drains slowly, so its acknowledged events wait in the spool: a second
    # server on that spool (its own store, a fast flush) would move them into its own store.
    spool = tmp_path / "shared.spool"
    first = server_factory(tmp_path / "first.db", flush="3s", extra_args=["--spool", str(spool)]).start()
    acknowledged: list[str] = []
    for _ in range(10):
        ids = [str(uuid.uuid4()) for _ in range(50)]
        status, _ = http_json("POST", first.url + "/events", [{"id": i, "key": "first"} for i in ids])
        assert status == 200
        acknowledged.extend(ids)
    second = subprocess.Popen(
        server_argv(0, "--db", str(tmp_path / "second.db"), "--spool", str(spool), "--flush", "20ms"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = second.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        second.kill()
        second.communicate(timeout=10)
        raise AssertionError("a second server started on a spool that another server holds") from None
    assert second.returncode == 1
    assert f"the spool {spool} is in use by another Tlytics server" in stderr
    assert f"pid {first.process.pid}" in stderr  # type: ignore[union-attr]
    first.wait_drained(timeout_s=60)
    assert sorted(first.stored_ids()) == sorted(acknowledged)


def test_a_refused_spool_leaves_the_store_free(tmp_path: Path) -> None:
    from tlytics.errors import SpoolError
    from tlytics.ingest.instance_lock import InstanceLock

    holder = InstanceLock(tmp_path / "a.db", tmp_path / "shared.spool")
    holder.acquire()
    try:
        with pytest.raises(SpoolError, match=f"pid {os.getpid()}"):
            InstanceLock(tmp_path / "b.db", tmp_path / "shared.spool").acquire()
        # The failed attempt released the store it had locked first: b.db is free.
        other = InstanceLock(tmp_path / "b.db", tmp_path / "b.spool")
        other.acquire()
        other.release()
    finally:
        holder.release()
    again = InstanceLock(tmp_path / "b.db", tmp_path / "shared.spool")
    again.acquire()  # released locks are free again, for a restart
    again.release()


def test_idle_and_slow_connections_do_not_stop_other_clients(server_factory: Any) -> None:
    server = server_factory().start()
    idle = []
    try:
        for n in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if n % 2:
                sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n")  # never finished
            idle.append(sock)
        started = time.monotonic()
        status, body = http_json("POST", server.url + "/events", [{"key": "still served"}])
        assert status == 200 and body["count"] == 1
        assert time.monotonic() - started < 2.0
    finally:
        for sock in idle:
            sock.close()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_writer_process_dies_with_a_killed_server(server_factory: Any) -> None:
    server = server_factory(flush="50ms").start()
    http_json("POST", server.url + "/events", [{"key": "wake the writer"}])
    server.wait_drained()
    assert server.process is not None
    workers = _children(server.process.pid)
    assert workers, "no writer process found"
    server.kill()
    eventually(
        lambda: not [pid for pid in workers if _running(pid)],
        timeout_s=10,
        what=f"the writer processes {workers} gone with the server",
    )


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited, it only waits to be reaped
