"""The client library against a real server (and a scriptable one for faults): offline
delivery, SIGKILL of the application, server outage, retry rules, deadlines, fork, sharing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tests.fake_server import FakeServer
from tests.helpers import ServerProcess, eventually, fast_config, free_port
from tests.shared_server import StoredSince
from tlytics import Client, Event, EventsRejected
from tlytics.errors import DeliveryError, EventsDropped, InvalidEvent, TlyticsError

ROOT = Path(__file__).resolve().parent.parent


def run_worker(mode: str, server_url: str, spool: Path, **options: Any) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.client_worker", mode, "--server", server_url, "--spool", str(spool)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def emitted_by(output: str) -> list[tuple[float, str]]:
    lines = [line.split() for line in output.splitlines() if line.strip()]
    return [(float(at), event_id) for at, event_id in lines if len(event_id) == 36]


def assert_stored_exactly(
    server: ServerProcess,
    expected: set[str],
    *,
    allowed_extra: set[str] = frozenset(),  # type: ignore[assignment]
    since: StoredSince | None = None,
) -> None:
    """Each of `expected` stored once, nothing else but `allowed_extra`: of everything the
    server stored, or on a shared server of what it stored `since` the test began."""
    server.wait_drained()
    stored = server.stored_ids() if since is None else since.ids()
    counts = Counter(stored)
    assert not [i for i, n in counts.items() if n > 1], "stored twice"
    missing = expected - set(stored)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}"
    assert set(stored) <= expected | allowed_extra


def test_offline_emit_then_exit_then_new_client_delivers_each_once(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory()
    spool = tmp_path / "client-spool"
    # The server is not running yet: the application emits and exits normally.
    worker = run_worker("emit-and-exit", server.url, spool, count=500)
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0
    emitted = {event_id for _, event_id in emitted_by(output)}
    assert len(emitted) == 500

    server.start()
    with Client(fast_config(server.url, spool)) as client:
        assert client.flush(timeout=30)
    assert_stored_exactly(server, emitted)
    assert len(server.stored_ids()) == 500


@pytest.mark.parametrize("run_s", [0.4, 1.2])
def test_sigkill_of_the_application_loses_nothing_older_than_spool_interval(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path, run_s: float
) -> None:
    server = shared_server
    spool = tmp_path / "client-spool"
    worker = run_worker("emit-forever", server.url, spool, spool_interval=0.05)
    assert worker.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stdout))  # type: ignore[arg-type]
    reader.start()
    # Wait out the interpreter start.
    eventually(lambda: len(lines) >= 50, timeout_s=30, interval_s=0.01, what="the worker's first 50 emits")
    time.sleep(run_s)
    killed_at = time.monotonic()
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    reader.join(timeout=30)
    emitted = emitted_by("".join(lines))
    assert len(emitted) > 100
    # Anything emitted more than spool_interval (plus scheduling slack on a busy machine)
    # before the kill was on disk and must arrive; later ones may or may not.
    must_arrive = {event_id for at, event_id in emitted if at < killed_at - 0.05 - 0.25}
    assert must_arrive

    with Client(fast_config(server.url, spool)) as client:
        assert client.flush(timeout=30)
    assert_stored_exactly(server, must_arrive, allowed_extra={i for _, i in emitted}, since=stored_since)


def test_server_outage_mid_stream_loses_and_duplicates_nothing(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory().start()
    client = Client(fast_config(server.url, tmp_path / "client-spool"))
    emitted: list[str] = []
    latencies_s: list[tuple[str, float]] = []
    phase = ["before"]
    stop = threading.Event()

    def emit_continuously() -> None:
        deadline = time.monotonic() + 30
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.perf_counter()
            emitted.append(client.emit("outage_test", {"n": n}))
            latencies_s.append((phase[0], time.perf_counter() - started))
            n += 1
            time.sleep(0.0005)

    emitter = threading.Thread(target=emit_continuously)
    emitter.start()
    time.sleep(0.8)
    phase[0] = "outage"
    server.kill()
    time.sleep(1.5)  # the sender hits connection errors and backs off meanwhile
    restarted = ServerProcess(server.db_path)
    restarted.port, restarted.url = server.port, server.url  # same address, as after a deploy
    restarted.start()
    phase[0] = "after"
    time.sleep(0.8)
    stop.set()
    emitter.join(10)
    try:
        assert client.flush(timeout=30)
        client.close(timeout=5)
        assert client.stats.retries > 0, "the outage was never noticed"
        assert_stored_exactly(restarted, set(emitted))
        assert len(restarted.stored_ids()) == len(emitted)
    finally:
        restarted.kill()

    def p99(name: str) -> float:
        values = sorted(s for p, s in latencies_s if p == name)
        return values[int(len(values) * 0.99)]

    # emit() never touches the network: the outage does not slow it (generous bound: shared CPU).
    assert p99("outage") < max(10 * p99("before"), 0.005), (p99("before"), p99("outage"))


def test_retry_after_is_respected(tmp_path: Path) -> None:
    answers = iter([(503, {"error": "busy"}, {"Retry-After": "1"})])

    def answer(events: list[dict[str, Any]], headers: dict[str, str]) -> Any:
        return next(answers, (200, {"count": len(events)}, {}))

    fake = FakeServer(answer=answer).start()
    try:
        with Client(fast_config(fake.url, tmp_path / "s", retry_max_delay=0.05)) as client:
            event_id = client.emit("a")
            assert client.flush(timeout=10)
        first, second = fake.received[0], fake.received[1]
        assert second.at - first.at >= 0.95, "retried before Retry-After"
        assert fake.ids() == [event_id]
    finally:
        fake.stop()


def test_connection_errors_retry_with_backoff_until_the_server_appears(tmp_path: Path) -> None:
    port = free_port()
    client = Client(fast_config(f"http://127.0.0.1:{port}", tmp_path / "s", retry_max_delay=0.2))
    event_id = client.emit("early")
    time.sleep(0.5)
    assert client.stats.retries >= 2
    fake = FakeServer(port=port).start()
    try:
        assert client.flush(timeout=10)
        assert fake.ids() == [event_id]
    finally:
        client.close(1)
        fake.stop()


def test_poison_event_goes_to_dead_letter_without_blocking_the_rest(tmp_path: Path) -> None:
    def answer(events: list[dict[str, Any]], headers: dict[str, str]) -> Any:
        for index, event in enumerate(events):
            if event["key"] == "poison":
                return 400, {"error": "poisoned", "index": index, "field": "key"}, {}
        return 200, {"count": len(events)}, {}

    errors: list[TlyticsError] = []

    def on_error(error: TlyticsError) -> None:
        errors.append(error)
        raise RuntimeError("a buggy callback must not kill the sender")

    fake = FakeServer(answer=answer).start()
    try:
        client = Client(fast_config(fake.url, tmp_path / "s", on_error=on_error, spool_interval=0.5))
        good = [client.emit("good", {"n": n}) for n in range(5)]
        poison = client.emit("poison")
        good += [client.emit("good", {"n": n}) for n in range(5, 10)]
        # Not every event was acknowledged: flush() says so, and the stats say why.
        assert client.flush(timeout=10) is False
        assert client.stats.dead_lettered == 1
        assert client.stats.last_rejection is not None and "400" in client.stats.last_rejection
        later = client.emit("later")
        assert client.flush(timeout=10)
        client.close(1)
        assert sorted(fake.ids()) == sorted([*good, later])
        assert len(errors) == 1 and isinstance(errors[0], EventsRejected)
        assert [e["id"] for e in errors[0].events] == [poison]
        dead = Client(fast_config(fake.url, tmp_path / "s"))._dead_letter.peek(10)
        assert len(dead) == 1 and poison.encode() in dead[0][1]
    finally:
        fake.stop()


def test_flush_and_close_return_by_their_deadline_when_the_server_hangs(tmp_path: Path, server_factory: Any) -> None:
    fake = FakeServer(hang=True).start()
    spool = tmp_path / "s"
    try:
        # The request timeout is longer than both deadlines below.
        client = Client(fast_config(fake.url, spool, timeout=3.0))
        ids = [client.emit("stuck", {"n": n}) for n in range(20)]
        started = time.monotonic()
        assert client.flush(timeout=0.5) is False
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        assert client.close(timeout=0.5) is False
        assert time.monotonic() - started < 1.0
    finally:
        fake.stop()
    # Nothing was lost: the next client on the spool delivers everything to a real server, at
    # the same address (a spooled event only ever goes to the destination it was emitted for).
    server = server_factory()
    server.port, server.url = fake.port, fake.url
    server.start()
    with Client(fast_config(server.url, spool)) as client:
        assert client.flush(timeout=30)
    assert_stored_exactly(server, set(ids))


def test_emit_and_send(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory()
    client = Client(fast_config(server.url, tmp_path / "s", flush_period=3600))
    with pytest.raises(DeliveryError):
        client.emit_and_send(Event(key="payment", data={"amount": 5}))  # server down
    server.start()
    sent = client.emit_and_send("signup", {"user_id": "1"})
    server.wait_drained()  # acknowledged means in the server's spool; /view shows it once drained
    assert sent in server.stored_ids()
    assert client.flush(timeout=10)  # the failed one stayed spooled and now arrives
    server.wait_drained()
    assert len(server.stored_ids()) == 2
    client.close(1)


def test_spool_full_keeps_a_bounded_number_in_memory_drops_newest_counts_and_never_blocks(tmp_path: Path) -> None:
    errors: list[TlyticsError] = []
    config = fast_config(
        "http://127.0.0.1:9",
        tmp_path / "s",
        spool_max_bytes=1,
        spool_interval=0,
        max_memory_events=10,
        on_error=errors.append,
    )
    client = Client(config)
    # "Never blocks": the server address refuses connections and the spool is full, yet every
    # emit returns (in a thread, so a blocking emit fails the test instead of hanging it).
    ids: list[str] = []
    emitter = threading.Thread(target=lambda: ids.extend(client.emit("x", {"n": n}) for n in range(50)), daemon=True)
    emitter.start()
    emitter.join(timeout=60)
    assert not emitter.is_alive() and len(set(ids)) == 50
    # The first 10 wait in memory for the spool; the 40 newest are dropped.
    assert client.dropped == 40
    assert client.pending() == 10
    client.close(0.2)
    assert errors and all(isinstance(e, EventsDropped) for e in errors)
    assert sum(e.count for e in errors if isinstance(e, EventsDropped)) == 40


def test_emit_validates_cheaply_and_rejects_what_could_never_be_stored(tmp_path: Path) -> None:
    client = Client(fast_config("http://127.0.0.1:9", tmp_path / "s"))
    for bad in ("", "x" * 201, "tab\t"):
        with pytest.raises(InvalidEvent):
            client.emit(bad)
    with pytest.raises(InvalidEvent):
        client.emit(Event(key="a", timestamp="yesterday"))
    from datetime import datetime

    with pytest.raises(InvalidEvent):
        client.emit(Event(key="a", timestamp=datetime(2025, 1, 1)))  # naive
    for bad in ("a\u202eb", "\u200b", "   "):  # invisible, or nothing to see
        with pytest.raises(InvalidEvent):
            client.emit(bad)
    assert client.pending() == 0
    client.close(0.1)


def test_emit_refuses_ids_the_server_would_refuse_and_returns_the_id_it_stores(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    """An id the server refuses raised nothing at emit: it waited in the spool, then was
    dead-lettered. An uppercase id is stored lowercase, so emit returns it so."""
    server = shared_server
    failures: list[TlyticsError] = []
    client = Client(fast_config(server.url, tmp_path / "s", on_error=failures.append))
    try:
        for bad in ("", "garbage", "{0190a5d6-0000-7000-8000-000000000001}", "0190a5d600007000800000000000000001"):
            with pytest.raises(InvalidEvent, match="id"):
                client.emit(Event(key="a", id=bad))
        upper = "0190A5D6-0000-7000-8000-00000000ABCD"
        returned = client.emit(Event(key="a", id=upper))
        assert returned == upper.lower()
        assert client.flush(timeout=30)
        server.wait_drained()
        assert stored_since.ids() == [returned]
        assert client.stats.dead_lettered == 0 and not failures
    finally:
        client.close(timeout=5)


def test_nan_and_infinity_are_refused_at_emit_not_sent_as_null(tmp_path: Path) -> None:
    """orjson writes NaN and Infinity as null: such an event was stored changed, silently.
    Then it was set aside in the background, after emit() had returned its id (issue 18,
    item 11): now emit() and emit_and_send() raise InvalidEvent for it. A real null still
    goes through."""
    fake = FakeServer().start()
    failures: list[TlyticsError] = []
    client = Client(fast_config(fake.url, tmp_path / "s", on_error=failures.append))
    try:
        kept = client.emit("a", {"n": None, "x": 1.5})
        with pytest.raises(InvalidEvent, match="NaN"):
            client.emit("a", {"x": float("nan")})
        with pytest.raises(InvalidEvent, match=r"data\['deep'\]\[0\]\['x'\]"):
            client.emit("a", {"deep": [{"x": float("-inf")}]})
        with pytest.raises(InvalidEvent, match="NaN"):
            client.emit_and_send("a", {"x": float("inf")})
        assert client.flush(timeout=30)
        assert fake.ids() == [kept]
        assert [event["data"] for received in fake.received for event in received.events] == [{"n": None, "x": 1.5}]
        assert not failures
    finally:
        client.close(timeout=5)
        fake.stop()


def test_the_sender_thread_survives_a_surprise_and_delivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception nobody expected (here from the transport) ended the sender thread: the
    events stayed on disk with nothing reported. It is logged, and the sender retries."""
    from tlytics.client.transport import Transport

    real_post = Transport.post_batch
    calls: list[int] = []

    def post_failing_once(self: Transport, events_json: bytes) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a surprise")
        return real_post(self, events_json)

    monkeypatch.setattr(Transport, "post_batch", post_failing_once)
    fake = FakeServer().start()
    client = Client(fast_config(fake.url, tmp_path / "s"))
    try:
        event_id = client.emit("a")
        eventually(lambda: fake.ids() == [event_id], what="delivery after the surprise")
    finally:
        client.close(timeout=5)
        fake.stop()


def test_emit_refuses_timestamps_the_server_could_not_print_back(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    client = Client(fast_config("http://127.0.0.1:9", tmp_path / "s"))
    minus_12 = timezone(timedelta(hours=-12))
    plus_1 = timezone(timedelta(hours=1))
    for bad in (
        "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00+01:00",
        datetime(9999, 12, 31, 23, 0, tzinfo=minus_12),
        datetime(1, 1, 1, 0, 30, tzinfo=plus_1),
    ):
        with pytest.raises(InvalidEvent) as caught:
            client.emit(Event(key="a", timestamp=bad))
        assert caught.value.field == "timestamp" and "0001-9999" in caught.value.message
    for good in ("9999-12-31T23:59:59.999999Z", datetime(1, 1, 1, tzinfo=UTC), "0999-06-01T00:00:00Z"):
        client.emit(Event(key="a", timestamp=good))
    assert client.pending() == 3
    client.close(0.1)


def test_write_key_and_gzip_are_sent(tmp_path: Path) -> None:
    fake = FakeServer().start()
    try:
        with Client(fast_config(fake.url, tmp_path / "s", write_key="secret-w")) as client:
            for n in range(300):
                client.emit("big", {"n": n, "text": "lorem ipsum " * 5})
            assert client.flush(timeout=10)
        headers = fake.received[0].headers
        assert headers["authorization"] == "Bearer secret-w"
        assert headers["content-encoding"] == "gzip"
        assert len(fake.ids()) == 300
    finally:
        fake.stop()


def test_forked_child_sends_its_own_events_and_memory_is_not_duplicated(tmp_path: Path) -> None:
    fake = FakeServer().start()
    try:
        client = Client(fast_config(fake.url, tmp_path / "s", spool_interval=30))
        parent_before = [client.emit("parent", {"n": n}) for n in range(10)]  # still in memory
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(read_fd)
                in_memory = len(client._buffer)
                ids = [client.emit("child", {"n": n}) for n in range(20)]
                ok = client.close(timeout=10)
                os.write(write_fd, f"{in_memory} {int(ok)} {' '.join(ids)}".encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            in_memory, ok, *child_ids = pipe.read().split()
        os.waitpid(pid, 0)
        assert in_memory == "0", "the child must not inherit the parent's unspooled events"
        assert ok == "1"
        parent_after = [client.emit("parent", {"n": n}) for n in range(10)]
        assert client.flush(timeout=10)
        client.close(1)
        received = fake.ids()
        assert sorted(received) == sorted(parent_before + parent_after + child_ids)
    finally:
        fake.stop()


def test_two_processes_on_one_spool_send_each_event_once(tmp_path: Path) -> None:
    fake = FakeServer().start()
    spool = tmp_path / "shared"
    try:
        workers = [run_worker("emit-then-flush", fake.url, spool, count=400, flush_period=0.05) for _ in range(2)]
        outputs = [w.communicate(timeout=60)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers)
        emitted = [i for output in outputs for _, i in emitted_by(output)]
        assert len(emitted) == 800
        with Client(fast_config(fake.url, spool)) as client:  # picks up anything left
            assert client.flush(timeout=10)
        received = Counter(fake.ids())
        assert set(received) == set(emitted)
        assert max(received.values()) == 1, "an event was sent twice"
    finally:
        fake.stop()


def _client_script(tmp_path: Path, logging_setup: str) -> str:
    return f"""
import logging, time
{logging_setup}
from tlytics import Client, Config
client = Client(Config(server_url="http://127.0.0.1:9", spool_dir={str(tmp_path / "s")!r}, flush_period=0.05,
                       retry_max_delay=0.05, timeout=0.5))
client.emit("x", {{"n": 1}})
deadline = time.monotonic() + 20
while client.stats.retries < 2 and time.monotonic() < deadline:
    time.sleep(0.02)
assert client.stats.retries >= 2, "the sender never retried"
client.close(0.2)
"""


@pytest.mark.parametrize(
    ("logging_setup", "expect_retry_line"),
    [
        ("", False),  # an application that configures no logging hears nothing from a library
        ("logging.basicConfig(level=logging.CRITICAL)", False),  # nor at CRITICAL
        ("logging.basicConfig(level=logging.WARNING)", True),  # its own set-up decides
    ],
)
def test_the_client_logs_through_the_applications_logging_only(
    tmp_path: Path, logging_setup: str, expect_retry_line: bool
) -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", _client_script(tmp_path, logging_setup)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "", "a library must not print to the application's stdout"
    assert ("client_send_retry" in completed.stderr) == expect_retry_line, completed.stderr
    if expect_retry_line:
        assert "WARNING:tlytics.client:" in completed.stderr  # the stdlib's own format and logger name
