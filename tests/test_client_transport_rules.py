"""The sender's rules, checked through MockTransport (no sockets, no sleeps): a Retry-After on
any answer holds back every connection (issue 18, item 8), and a 413 teaches the sender the
server's limit, kept for every later batch (item 9). One real-server test per rule proves
the wiring."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import ServerProcess, fast_config
from tlytics import Client, Config
from tlytics.client.delivery import LearnedLimits, SenderStats
from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.lease import SenderLease, WakeFile
from tlytics.client.prepare import entry_bytes, prepare_event
from tlytics.client.sender import SecondRequest, Sender, Step
from tlytics.client.transport import MockRequest, MockTransport, Reply, reply
from tlytics.spool import Spool


def accepted(request: MockRequest) -> Reply:
    count = len(request.events())
    return reply(200, {"message": f"Successfully queued {count} events", "count": count})


def make_sender(tmp_path: Path, transport: MockTransport, **options: Any) -> tuple[Sender, ForkSafeSpool, SenderStats]:
    config = Config(server_url="http://tlytics.invalid", spool_dir=tmp_path, transport=transport, **options)
    spool = ForkSafeSpool(Spool(tmp_path / "queue"))
    stats = SenderStats()
    sender = Sender(
        spool=spool,
        dead_letter=ForkSafeSpool(Spool(tmp_path / "dead-letter")),
        config=config,
        lease=SenderLease(tmp_path / "sender.lock"),
        wake_file=WakeFile(tmp_path / "wake"),
        limits=LearnedLimits(config.max_batch, config.max_batch_bytes),
        new_transport=lambda: transport,
        report=lambda error: None,
        wake=threading.Event(),
        stop=threading.Event(),
        progress=threading.Condition(),
        stats=stats,
    )
    return sender, spool, stats


def spool_events(spool: ForkSafeSpool, count: int, per_entry: int) -> None:
    for start in range(0, count, per_entry):
        events = [prepare_event("n", {"n": n}) for n in range(start, min(start + per_entry, count))]
        spool.append(entry_bytes(events))  # type: ignore[arg-type]


def delivered_numbers(transport: MockTransport, *, max_events: int = 10**9, max_bytes: int = 10**12) -> list[int]:
    """The events of the requests the server took (within its limits)."""
    taken = [r for r in transport.requests if len(r.events()) <= max_events and len(r.body) <= max_bytes]
    return [event["data"]["n"] for request in taken for event in request.events()]


def test_retry_after_on_the_second_request_in_flight_holds_back_both(tmp_path: Path) -> None:
    def answer(request: MockRequest) -> Reply:
        if request.events()[0]["data"]["n"] >= 10:  # the second batch
            return reply(429, {"error": "slow down"}, {"Retry-After": "2"})
        return accepted(request)

    transport = MockTransport(answer)
    sender, spool, _ = make_sender(tmp_path, transport, max_batch=10)
    spool_events(spool, 20, per_entry=10)
    second = SecondRequest(transport, sender._deliver)
    try:
        # The first batch was delivered, but the server asked to wait: no request before 2 s.
        assert sender.step(transport, second) == (Step.WAIT, 2.0)
    finally:
        second.close()
    assert spool.count() == 1  # the refused batch stays, to be sent after the wait


def test_retry_after_on_the_first_request_holds_back_both(tmp_path: Path) -> None:
    def answer(request: MockRequest) -> Reply:
        if request.events()[0]["data"]["n"] < 10:
            return reply(503, {"error": "busy"}, {"Retry-After": "3"})
        return accepted(request)

    transport = MockTransport(answer)
    sender, spool, _ = make_sender(tmp_path, transport, max_batch=10)
    spool_events(spool, 20, per_entry=10)
    second = SecondRequest(transport, sender._deliver)
    try:
        assert sender.step(transport, second) == (Step.WAIT, 3.0)
    finally:
        second.close()


def limited_server(max_events: int) -> MockTransport:
    def answer(request: MockRequest) -> Reply:
        count = len(request.events())
        if count > max_events:
            message = f"too many events in one request: {count} (at most {max_events})"
            return reply(413, {"error": message, "limit": max_events})
        return accepted(request)

    return MockTransport(answer)


def test_a_413_stating_its_limit_is_learned_once_for_every_later_batch(tmp_path: Path) -> None:
    transport = limited_server(100)
    sender, spool, stats = make_sender(tmp_path, transport)  # max_batch 1000
    spool_events(spool, 20_000, per_entry=1000)
    for _ in range(1000):
        step, _ = sender.step(transport)
        if step is Step.IDLE:
            break
        assert step is Step.SENT
    assert spool.count() == 0
    assert sorted(delivered_numbers(transport, max_events=100)) == list(range(20_000))
    # One refused request, then batches of the stated limit: 201 (halving from 1,000 at each
    # batch took 621).
    assert len(transport.requests) == 201
    assert stats.dead_lettered == 0


_BODY_LIMIT = 20_000


@pytest.mark.parametrize(
    "refusal",
    [
        # A server from before `limit_of`: the unit is read from the message.
        {"error": f"request body is larger than {_BODY_LIMIT} bytes", "limit": _BODY_LIMIT},
        # `limit_of` decides, whatever the message says (a proxy or a translated message).
        {"error": "zu groß", "limit": _BODY_LIMIT, "limit_of": "bytes_per_body"},
    ],
    ids=["from the message", "from limit_of"],
)
def test_a_413_for_the_body_size_is_learned_too(tmp_path: Path, refusal: dict[str, Any]) -> None:
    def answer(request: MockRequest) -> Reply:
        if len(request.body) > _BODY_LIMIT:
            return reply(413, refusal)
        return accepted(request)

    transport = MockTransport(answer)
    sender, spool, _ = make_sender(tmp_path, transport, max_batch=500)
    spool_events(spool, 5_000, per_entry=500)
    for _ in range(1000):
        if sender.step(transport)[0] is Step.IDLE:
            break
    assert sorted(delivered_numbers(transport, max_bytes=_BODY_LIMIT)) == list(range(5_000))
    refused = [r for r in transport.requests if len(r.body) > _BODY_LIMIT]
    assert len(refused) == 1  # only the first: the next batches are cut to the limit


def test_a_413_for_one_events_size_teaches_no_request_limit(tmp_path: Path) -> None:
    """An event over the server's per-event size is set aside, and the batches around it keep
    their size: the limit counts bytes of one event, not events or bytes of a request."""
    limits = LearnedLimits(1000, 1_000_000)
    # A message the fallback would read as a body limit ("body"): `limit_of` decides.
    answer = {"error": "this event's body is 5000 bytes, more than 1000", "index": 3, "limit": 1000}
    assert limits.learn({**answer, "limit_of": "bytes_per_event"}) is False
    assert (limits.max_events, limits.max_bytes) == (1000, 1_000_000)


def test_real_server_with_a_small_event_limit_is_learned(server_factory: Any, tmp_path: Path) -> None:
    server: ServerProcess = server_factory(extra_args=["--max-events", "100"]).start()
    with Client(fast_config(server.url, tmp_path / "spool", spool_interval=0.5)) as client:
        ids = [client.emit("n", {"n": n}) for n in range(5_000)]
        assert client.flush(timeout=60) is True
        # 5 batches of 1,000: one 413, then 50 requests of 100 (halving needed about 150).
        assert client.stats.requests <= 60, client.stats
    server.wait_drained()
    assert sorted(server.stored_ids()) == sorted(ids)


def test_mock_transport_sees_what_the_client_sends(tmp_path: Path) -> None:
    transport = MockTransport(accepted)
    with Client(Config(server_url="http://tlytics.invalid", spool_dir=tmp_path, transport=transport)) as client:
        sent = client.emit_and_send("signup", {"plan": "pro"})
        assert client.flush(timeout=10) is True
    [request] = transport.requests
    assert (request.method, request.path) == ("POST", "/batch")
    assert orjson.loads(request.body)["events"][0]["id"] == sent
