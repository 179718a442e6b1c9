"""Crash and restart: every acknowledged event is stored exactly once, whatever the stop.

A real server subprocess takes a stream of batches from several threads; it is killed with
SIGKILL at a random moment (no cleanup runs), restarted on the same db and spool, and the
events it acknowledged are counted in /view.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from typing import Any

import pytest

from tests.conftest import ServerProcess, http_json
from tlytics.spool import Spool
from tlytics.store import SQLiteStore


class Sender:
    """Threads posting batches of fresh-id events until stopped; records what got a 200."""

    def __init__(self, url: str, *, threads: int = 4, batch_size: int = 50) -> None:
        self.url = url
        self.batch_size = batch_size
        self.acknowledged: set[str] = set()
        self.sent: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def start(self) -> Sender:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, n: int) -> None:
        deadline = time.monotonic() + 60  # bounded even if nobody stops us
        path = "/events" if n % 2 else "/batch"
        while not self._stop.is_set() and time.monotonic() < deadline:
            ids = [str(uuid.uuid4()) for _ in range(self.batch_size)]
            events = [{"id": i, "key": "crash_test", "data": {"thread": n}} for i in ids]
            # A duplicate inside the request must still count once.
            events.append(dict(events[0]))
            body: Any = events if path == "/events" else {"events": events}
            with self._lock:
                self.sent.update(ids)
            try:
                status, _ = http_json("POST", self.url + path, body, timeout_s=5.0)
            except OSError:
                return  # the server is gone
            if status == 200:
                with self._lock:
                    self.acknowledged.update(ids)

    def wait_acknowledged(self, timeout_s: float = 30.0) -> Sender:
        """Wait for the first 200: on a busy machine the stream can take a while to get going."""
        deadline = time.monotonic() + timeout_s
        while not self.acknowledged and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def assert_exactly_once(server: ServerProcess, acknowledged: set[str], sent: set[str]) -> None:
    health = server.wait_drained()
    stored = server.stored_ids()
    print(f"acknowledged={len(acknowledged)} sent={len(sent)} stored={len(stored)}")
    assert len(stored) == len(set(stored)), "an event is stored twice"
    assert health["stored_events"] == len(stored)
    missing = acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert set(stored) <= sent, "the store holds events nobody sent"


@pytest.mark.parametrize(
    ("flush", "kill_after_s"),
    [
        ("50ms", 0.3),   # writer draining constantly: kill lands inside store/spool work
        ("50ms", 1.1),
        ("1s", 0.7),     # mostly still in the spool at kill time
        ("10s", 1.5),    # nothing drained yet: all of it comes back from the spool
        ("200ms", None),  # a random moment
    ],
)
def test_sigkill_mid_stream_loses_and_duplicates_nothing(server_factory: Any, flush: str, kill_after_s: float | None) -> None:
    server = server_factory(flush=flush).start()
    sender = Sender(server.url).start().wait_acknowledged()
    time.sleep(kill_after_s if kill_after_s is not None else random.uniform(0.2, 1.5))
    server.kill()
    sender.stop()
    assert len(sender.acknowledged) > 0, "the stream never got going"

    restarted = server_factory(server.db_path, flush="50ms").start()
    assert_exactly_once(restarted, sender.acknowledged, sender.sent)


def test_repeated_kills_on_one_store(server_factory: Any, tmp_path: Any) -> None:
    db_path = tmp_path / "repeated.db"
    acknowledged: set[str] = set()
    sent: set[str] = set()
    for round_number in range(3):
        server = server_factory(db_path, flush="100ms").start()
        sender = Sender(server.url, threads=2).start()
        time.sleep(0.3 + 0.3 * round_number)
        server.kill()
        sender.stop()
        acknowledged |= sender.acknowledged
        sent |= sender.sent
    final = server_factory(db_path, flush="50ms").start()
    assert_exactly_once(final, acknowledged, sent)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_stop_keeps_everything_and_restart_adds_nothing(server_factory: Any, sig: int) -> None:
    # A long flush period: at stop time the events are only in the spool; the clean stop
    # drains them into the store.
    server = server_factory(flush="1h").start()
    sender = Sender(server.url, threads=2)
    sender.start()
    time.sleep(0.5)
    sender.stop()
    assert server.stop(sig) == 0
    assert "stopped" in server.log()

    restarted = server_factory(server.db_path, flush="1h").start()
    _, health = http_json("GET", restarted.url + "/health")
    assert health["spool_entries"] == 0, "the clean stop should have drained the spool"
    assert health["stored_events"] == len(sender.acknowledged)
    stored = restarted.stored_ids()
    assert sorted(stored) == sorted(sender.acknowledged)


def test_sigterm_during_requests_answers_them(server_factory: Any) -> None:
    server = server_factory(flush="1h").start()
    sender = Sender(server.url, threads=4).start()
    time.sleep(0.4)
    server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    sender.stop()
    assert server.process.wait(timeout=30) == 0  # type: ignore[union-attr]
    restarted = server_factory(server.db_path, flush="50ms").start()
    assert_exactly_once(restarted, sender.acknowledged, sender.sent)


def _signal_group_when(server: ServerProcess, moment: str) -> Sender | None:
    """Send the moment's traffic; return its Sender (still running during load), if any."""
    if moment == "right_after_health":
        # The writer process is usually still importing here: the window of the old race.
        status, _ = http_json("POST", server.url + "/events", [{"key": "early"}] * 5)
        assert status == 200
        return None
    sender = Sender(server.url, threads=2).start()
    if moment == "during_load":
        return sender.wait_acknowledged()
    time.sleep(0.5)  # "after_load": a pause, then the signal
    sender.stop()
    return sender


@pytest.mark.parametrize("moment", ["right_after_health", "during_load", "after_load"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_group_signal_at_any_moment_drains_and_exits_cleanly(server_factory: Any, tmp_path: Any, sig: int, moment: str) -> None:
    # A terminal's Ctrl-C (and systemd's stop) signal every process of the group, the writer
    # process included: the server must still finish with its final drain, whenever it comes.
    for attempt in range(3):  # the race was a window of a second or so: try it several times
        db_path = tmp_path / f"{moment}-{attempt}.db"
        server = server_factory(db_path, flush="1h").start()
        sender = _signal_group_when(server, moment)
        assert server.process is not None
        os.killpg(os.getpgid(server.process.pid), sig)
        if sender is not None:
            sender.stop()
        assert server.process.wait(timeout=60) == 0, server.log()[-3000:]
        log = server.log()
        for sign in ("Traceback", "KeyboardInterrupt", "writer_process_died", "writer_batch_failed"):
            assert sign not in log, log[-3000:]
        assert Spool(db_path.with_name(db_path.name + ".spool")).count() == 0, "the final drain did not run"
        if moment == "right_after_health":
            assert SQLiteStore(db_path).count() == 5
            continue
        assert sender is not None
        if moment == "after_load":
            assert SQLiteStore(db_path).count() == len(sender.acknowledged) > 0
        else:  # requests in flight at the signal are answered; their senders may not see it
            assert SQLiteStore(db_path).count() >= len(sender.acknowledged) > 0
