"""The client when its spool refuses events (disk full, an I/O error): nothing vanishes. Events
wait in memory up to `max_memory_events`, the newest beyond are dropped, counted and reported
through `on_error`, and the kept ones are delivered, in order, once the spool takes them."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProcess, eventually, fast_config
from tests.shared_server import StoredSince
from tlytics import Client, Config
from tlytics.errors import EventsDropped, SpoolError, TlyticsError

EMITTED = 3000
KEPT = 1000


def config(server_url: str, spool: Path, errors: list[TlyticsError], **overrides: Any) -> Config:
    options: dict[str, Any] = {"retry_max_delay": 0.2, "max_memory_events": KEPT, "on_error": errors.append}
    options.update(overrides)
    return fast_config(server_url, spool, **options)


def reported_drops(errors: list[TlyticsError]) -> int:
    drops = [e for e in errors if isinstance(e, EventsDropped)]
    assert len(drops) == len(errors), f"unexpected errors: {errors[:3]}"
    return sum(e.count for e in drops)


def assert_nothing_vanished(
    server: ServerProcess,
    client: Client,
    emitted: list[str],
    errors: list[TlyticsError],
    since: StoredSince | None = None,
) -> None:
    """Of what the server stored (on a shared server, `since` the test began)."""
    server.wait_drained(timeout_s=60)
    stored = server.stored_ids() if since is None else since.ids()
    assert not [i for i, n in Counter(stored).items() if n > 1], "stored twice"
    assert set(stored) <= set(emitted)
    assert len(stored) + client.dropped == len(emitted), f"{len(emitted) - len(stored) - client.dropped} vanished"
    assert client.dropped > 0
    assert reported_drops(errors) == client.dropped
    # Reported per episode (rate-limited), not once per dropped event.
    assert len(errors) <= 10


def test_refused_appends_keep_events_in_memory_then_deliver_them_in_order(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    server = shared_server
    errors: list[TlyticsError] = []
    client = Client(config(server.url, tmp_path / "spool", errors))
    refusing = threading.Event()
    refusing.set()
    spool = client._spool._spool
    real_append_many = spool.append_many
    attempts = 0

    def append_many(values: Sequence[bytes]) -> list[int]:
        nonlocal attempts
        if refusing.is_set():
            attempts += 1
            raise SpoolError("spool append failed: database or disk is full")
        return real_append_many(values)

    spool.append_many = append_many  # type: ignore[method-assign]
    try:
        emitted = [client.emit("page_view", {"n": n}) for n in range(EMITTED)]
        # The spooler keeps trying; meanwhile the oldest KEPT wait in memory, the rest are dropped.
        eventually(lambda: attempts >= 3 and client.pending() == KEPT, what="events kept in memory")
        assert client.dropped == EMITTED - KEPT
        eventually(lambda: reported_drops(errors) == EMITTED - KEPT, what="drops reported")
        assert client.flush(timeout=0.3) is False  # not on disk, not delivered, not forgotten

        refusing.clear()
        assert client.flush(timeout=60)
        assert_nothing_vanished(server, client, emitted, errors, stored_since)
        assert set(stored_since.ids()) == set(emitted[:KEPT])  # the newest were the ones dropped
    finally:
        client.close(1)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory = tmp_path / "tmpfs"
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)], check=False)
    if mounted.returncode != 0:
        pytest.skip("mount -t tmpfs is not allowed here")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_full_disk_loses_nothing_silently_and_the_kept_events_go_out_once_there_is_room(
    server_factory: Any, tmp_path: Path, tiny_tmpfs: Path
) -> None:
    server = server_factory()  # not running yet: events pile up in the spool until the disk is full
    errors: list[TlyticsError] = []
    client = Client(config(server.url, tiny_tmpfs / "spool", errors))
    try:
        padding = "x" * 300
        emitted = [client.emit("page_view", {"n": n, "padding": padding}) for n in range(EMITTED)]
        eventually(lambda: client.dropped > 0 and errors, what="disk full noticed and reported")
        eventually(lambda: reported_drops(errors) == client.dropped, what="every drop reported")
        assert len(client._buffer) <= KEPT

        # Room again (as when an operator frees the disk), and the server comes up.
        subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_tmpfs)], check=True)
        server.start()
        # False: events were dropped, so not everything emitted was acknowledged (issue 18,
        # item 5); it returns once the kept ones are delivered, not at the deadline.
        started = time.monotonic()
        assert client.flush(timeout=60) is False
        assert time.monotonic() - started < 50 and client.pending() == 0
        assert client.flush(timeout=60) is True  # nothing given up on since the last flush
        assert_nothing_vanished(server, client, emitted, errors)
    finally:
        client.close(1)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system of its own, for a spool that fills it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory = tmp_path / "small"
    directory.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(directory)], check=False).returncode:
        pytest.skip("mount -t tmpfs is not allowed here")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_spool_that_filled_its_disk_drains_once_the_server_is_back_and_opens_after_restart(
    server_factory: Any, small_tmpfs: Path
) -> None:
    """Issue 18, item 4: the spool filled its disk to the last byte, then removing delivered
    entries failed ("disk full"): the sender posted the same batches forever and a restart
    could not open the spool. The reserve (spool_min_free_bytes) stops appends first."""
    server = server_factory()  # down while the disk fills
    errors: list[TlyticsError] = []
    spool = small_tmpfs / "spool"
    options: dict[str, Any] = {"max_memory_events": 200, "spool_min_free_bytes": 512 * 1024}
    client = Client(config(server.url, spool, errors, **options))
    emitted: list[str] = []
    padding = "x" * 500
    deadline = time.monotonic() + 60
    while not client.dropped and time.monotonic() < deadline and len(emitted) < 50_000:
        emitted += [client.emit("page_view", {"n": len(emitted) + n, "padding": padding}) for n in range(100)]
        time.sleep(0.03)  # the spooler writes meanwhile, until the disk reaches its reserve
    assert client.dropped, "the disk never filled"
    try:
        server.start()
        # Every spooled and kept event is delivered and removed: the spool drains.
        eventually(lambda: client.pending() == 0, timeout_s=60, what="the spool drained")
        server.wait_drained()
        stored = server.stored_ids()
        assert len(stored) == len(set(stored)), "stored twice"
        assert set(stored) <= set(emitted)
        assert len(stored) + client.dropped == len(emitted)
    finally:
        client.close(timeout=5)
    # A restart opens the spool, and it works.
    with Client(config(server.url, spool, errors, **options)) as restarted:
        last = restarted.emit("after_restart")
        assert restarted.flush(timeout=30) is True
    server.wait_drained()
    assert last in server.stored_ids()
