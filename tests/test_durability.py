"""Crash and restart: every acknowledged event is stored exactly once, whatever the stop.

A real server subprocess takes a stream of batches from several threads; it is killed with
SIGKILL at a random moment (no cleanup runs), restarted on the same db and spool, and the
events it acknowledged are counted in /view.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import pytest

from tests.helpers import Sender, ServerProcess, assert_exactly_once, http_json, kill_under_load


@pytest.mark.parametrize(
    ("flush", "kill_after_s"),
    [
        ("50ms", 0.3),  # writer draining constantly: kill lands inside store/spool work
        ("50ms", 1.1),
        ("1s", 0.7),  # mostly still in the spool at kill time
        ("10s", 1.5),  # nothing drained yet: all of it comes back from the spool
        ("200ms", None),  # a random moment
    ],
)
def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    server_factory: Any, rng: random.Random, flush: str, kill_after_s: float | None
) -> None:
    server = server_factory(flush=flush).start()
    sender = kill_under_load(server, kill_after_s if kill_after_s is not None else rng.uniform(0.2, 1.5))
    assert len(sender.acknowledged) > 0, "the stream never got going"

    restarted = server_factory(server.db_path, flush="50ms").start()
    assert_exactly_once(restarted, sender.acknowledged, sender.sent)


def test_repeated_kills_on_one_store(server_factory: Any, tmp_path: Any) -> None:
    db_path = tmp_path / "repeated.db"
    acknowledged: set[str] = set()
    sent: set[str] = set()
    for round_number in range(3):
        server = server_factory(db_path, flush="100ms").start()
        sender = kill_under_load(server, 0.3 + 0.3 * round_number, wait_acknowledged=False, threads=2)
        acknowledged |= sender.acknowledged
        sent |= sender.sent
    final = server_factory(db_path, flush="50ms").start()
    assert_exactly_once(final, acknowledged, sent)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_stop_keeps_everything_and_restart_adds_nothing(server_factory: Any, sig: int) -> None:
    # A long flush period: at stop time the events are only in the spool; the clean stop
    # drains them into the store.
    server = server_factory(flush="1h").start()
    sender = Sender(server.url, threads=2).start().wait_acknowledged()
    time.sleep(0.5)  # more load; what the clean stop must keep is whatever it acknowledged
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
    sender = Sender(server.url, threads=4).start().wait_acknowledged()
    time.sleep(0.2)
    signalled_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert server.process.wait(timeout=30) == 0  # type: ignore[union-attr]
    sender.stop()
    # Requests the server was reading when the signal came are answered, and with a 200:
    # a graceful stop finishes them (4 senders post back to back, so some are in flight).
    statuses = {outcome for _, _, outcome in sender.answers}
    assert statuses <= {200, "cut off"}, statuses
    in_flight = [outcome for start, end, outcome in sender.answers if start < signalled_at < end]
    assert 200 in in_flight, f"no request in flight at the signal was answered: {in_flight}"
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
    # "after_load": the first acknowledgement (asserted on later), half a second more load, then
    # the load stops and the signal comes
    sender.wait_acknowledged()
    time.sleep(0.5)
    sender.stop()
    return sender


@pytest.mark.parametrize("moment", ["right_after_health", "during_load", "after_load"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_group_signal_at_any_moment_drains_and_exits_cleanly(
    server_factory: Any, tmp_path: Any, open_store: Any, open_spool: Any, sig: int, moment: str
) -> None:
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
        assert open_spool(db_path.with_name(db_path.name + ".spool")).count() == 0, "the final drain did not run"
        stored = open_store(db_path).count()
        if moment == "right_after_health":
            assert stored == 5
            continue
        assert sender is not None
        if moment == "after_load":
            assert stored == len(sender.acknowledged) > 0
        else:  # requests in flight at the signal are answered; their senders may not see it
            assert stored >= len(sender.acknowledged) > 0
