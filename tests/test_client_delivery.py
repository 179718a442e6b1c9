"""The client's delivery rules at the edges: batches bounded in bytes, a 413 split and resent,
an event the server refuses set aside alone with flush() saying so, and close() that does not
spend its deadline when no server is there at all (issue 12, defects 1 and 3)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.fake_server import FakeServer
from tests.helpers import fast_config, free_port
from tlytics import Client, Config, EventsRejected
from tlytics.client.transport import Transport
from tlytics.errors import ServerUnreachable, TlyticsError


def too_large_over(limit_bytes: int) -> Any:
    """A fake server's answer: 413 without an index for a batch over `limit_bytes` of JSON."""

    def answer(events: list[dict[str, Any]], headers: dict[str, str]) -> Any:
        if len(orjson.dumps(events)) > limit_bytes:
            return 413, {"error": f"request body is larger than {limit_bytes} bytes"}, {}
        return 200, {"count": len(events)}, {}

    return answer


def test_batches_stay_within_max_batch_bytes(tmp_path: Path) -> None:
    fake = FakeServer(answer=too_large_over(100_000)).start()
    try:
        # One spool interval's worth (~600 KB) would be a single request without the limit.
        client = Client(fast_config(fake.url, tmp_path / "s", spool_interval=0.5, max_batch_bytes=64_000))
        ids = [client.emit("big", {"n": n, "blob": "x" * 2000}) for n in range(300)]
        assert client.flush(timeout=30)
        client.close(1)
        assert sorted(fake.ids()) == sorted(ids)
        assert all(r.events for r in fake.received), "a request was refused as too large"
        assert all(len(orjson.dumps(r.events)) + 11 <= 64_000 for r in fake.received)
        assert len(fake.received) >= 10
    finally:
        fake.stop()


def test_a_413_without_index_splits_the_batch_and_an_event_too_big_alone_is_set_aside(tmp_path: Path) -> None:
    fake = FakeServer(answer=too_large_over(100_000)).start()
    errors: list[TlyticsError] = []
    try:
        # The client's limit is above this server's: only the 413s can bring batches down.
        client = Client(fast_config(fake.url, tmp_path / "s", spool_interval=0.5, on_error=errors.append))
        ids = [client.emit("big", {"n": n, "blob": "x" * 2000}) for n in range(150)]
        huge = client.emit("huge", {"blob": "y" * 150_000})
        ids += [client.emit("big", {"n": n, "blob": "x" * 2000}) for n in range(150, 300)]
        assert client.flush(timeout=30) is False, "an event was dead-lettered, yet flush() said all was acknowledged"
        assert sorted(fake.ids()) == sorted(ids)
        assert client.stats.delivered == 300
        assert client.stats.dead_lettered == 1
        assert client.stats.last_rejection is not None and "413" in client.stats.last_rejection
        assert len(errors) == 1 and isinstance(errors[0], EventsRejected)
        assert [e["id"] for e in errors[0].events] == [huge]
        assert client.close(5), "nothing new since the last flush"
        dead = client._dead_letter.peek(10)
        assert len(dead) == 1 and huge.encode() in dead[0][1]
    finally:
        fake.stop()


def test_a_413_naming_an_index_sets_aside_that_event_only(tmp_path: Path) -> None:
    def answer(events: list[dict[str, Any]], headers: dict[str, str]) -> Any:
        for index, event in enumerate(events):
            if event["key"] == "huge":
                return 413, {"error": "event is too large", "index": index, "limit": 1000}, {}
        return 200, {"count": len(events)}, {}

    fake = FakeServer(answer=answer).start()
    try:
        client = Client(fast_config(fake.url, tmp_path / "s", spool_interval=0.5))
        ids = [client.emit("small", {"n": n}) for n in range(500)]
        huge = client.emit("huge", {"blob": "y" * 5000})
        ids += [client.emit("small", {"n": n}) for n in range(500, 999)]
        assert client.flush(timeout=30) is False
        client.close(1)
        assert sorted(fake.ids()) == sorted(ids)
        assert client.stats.dead_lettered == 1
        dead = client._dead_letter.peek(10)
        assert len(dead) == 1 and orjson.loads(dead[0][1])["events"][0]["id"] == huge
    finally:
        fake.stop()


def test_real_server_with_small_limits_takes_every_event_but_the_oversized_one(
    tmp_path: Path, server_factory: Any
) -> None:
    server = server_factory(extra_args=["--max-body", "2MiB", "--max-event-size", "64KiB"]).start()
    with Client(fast_config(server.url, tmp_path / "a", spool_interval=0.5, timeout=10.0)) as client:
        big = [client.emit("big", {"n": n, "blob": f"{n:06d}" * 2000}) for n in range(1000)]
        assert client.flush(timeout=60), client.stats
        assert client.stats.dead_lettered == 0
    with Client(fast_config(server.url, tmp_path / "b", spool_interval=0.5, timeout=10.0)) as client:
        small = [client.emit("small", {"n": n}) for n in range(500)]
        client.emit("oversized", {"blob": "z" * 100_000})
        small += [client.emit("small", {"n": n}) for n in range(500, 999)]
        assert client.flush(timeout=60) is False
        assert client.stats.dead_lettered == 1
        assert client.stats.delivered == 999
    server.wait_drained()
    stored = server.stored_ids()
    assert len(stored) == len(set(stored)) == 1999
    assert set(stored) == set(big) | set(small)


def test_close_returns_at_once_when_the_server_refuses_connections(tmp_path: Path, server_factory: Any) -> None:
    refused_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spool = tmp_path / "s"
    client = Client(fast_config(refused_url, spool, timeout=10.0, retry_max_delay=5.0))
    ids = [client.emit("offline", {"n": n}) for n in range(200)]
    started = time.monotonic()
    assert client.close(timeout=10) is False
    elapsed = time.monotonic() - started
    # The bound is generous for a busy machine; today's behaviour is the whole 10 s deadline.
    assert elapsed < 5.0, f"close() took {elapsed:.1f}s of its 10s deadline with no server to wait for"
    assert client.stats.server_unreachable

    # The server comes up where the events were meant to go (a spooled event only ever goes
    # to the destination it was emitted for).
    server = server_factory()
    server.port, server.url = int(refused_url.rsplit(":", 1)[1]), refused_url
    server.start()
    with Client(fast_config(server.url, spool)) as later:
        assert later.flush(timeout=30)
    server.wait_drained()
    assert sorted(server.stored_ids()) == sorted(ids)


def test_close_keeps_retrying_until_its_deadline_while_a_server_answers_503(tmp_path: Path) -> None:
    fake = FakeServer(answer=lambda events, headers: (503, {"error": "busy"}, {})).start()
    try:
        client = Client(fast_config(fake.url, tmp_path / "s", retry_max_delay=0.3))
        client.emit("waiting")
        started = time.monotonic()
        assert client.close(timeout=3) is False
        elapsed = time.monotonic() - started
        assert 2.5 <= elapsed < 10, elapsed
        assert len(fake.received) >= 3, "close() gave up on a server that answers"
        assert not client.stats.server_unreachable
    finally:
        fake.stop()


def test_transport_says_when_nothing_listens() -> None:
    transport = Transport(f"http://127.0.0.1:{free_port()}", timeout_s=5, write_key=None, gzip_min_bytes=4096)
    try:
        with pytest.raises(ServerUnreachable):
            transport.post_batch(b"[]")
    finally:
        transport.close()


def test_transport_says_when_the_host_name_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # No lookup leaves the machine: the resolver's failure is what is under test.
    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    transport = Transport("http://tlytics-test.invalid:8081", timeout_s=5, write_key=None, gzip_min_bytes=4096)
    try:
        with pytest.raises(ServerUnreachable):
            transport.post_batch(b"[]")
    finally:
        transport.close()


def test_requests_keep_to_max_batch_when_data_nests_event_like_objects(tmp_path: Path) -> None:
    fake = FakeServer().start()
    try:
        # spool_interval=0: one spool entry per event, so the sender combines entries, counting
        # their events without decoding them; data shaped like an event must not fool it.
        client = Client(fast_config(fake.url, tmp_path / "s", spool_interval=0, max_batch=10))
        nested = {"id": "0190a5d6-0000-7000-8000-000000000001", "key": "inner", "timestamp": "2026-01-01T00:00:00Z"}
        ids = [client.emit("outer", {"n": n, "copy": nested} if n % 2 else {"n": n}) for n in range(95)]
        assert client.flush(timeout=30)
        client.close(1)
        assert sorted(fake.ids()) == sorted(ids)
        assert all(0 < len(r.events) <= 10 for r in fake.received)
        assert client.stats.delivered == 95
    finally:
        fake.stop()


class PairingServer(FakeServer):
    """Holds each request until a second one is in flight beside it (at most 5 s), counts how
    many were in flight at once, and refuses the first request that arrives second (503)."""

    def __init__(self, port: int) -> None:
        super().__init__(port=port)
        self.in_flight = 0
        self.most_in_flight = 0
        self.arrivals = 0
        self.refused_one = False

    async def _batch(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.arrivals += 1
        arrival = self.arrivals
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        second = self.in_flight >= 2
        try:
            for _ in range(500):  # bounded: 5 s for a partner to arrive
                if second or self.arrivals > arrival:
                    break
                await asyncio.sleep(0.01)
            if second and not self.refused_one:
                self.refused_one = True
                return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0"})
            return await super()._batch(request)
        finally:
            self.in_flight -= 1


def test_the_sender_keeps_two_requests_in_flight_and_resends_only_what_was_refused(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    port = free_port()
    refused = f"http://127.0.0.1:{port}"
    offline = Client(Config(server_url=refused, spool_dir=spool_dir, spool_interval=0, max_batch=10))
    # 7 batches of 10, one refused and sent again: 8 requests, in 4 pairs (none waits alone)
    emitted = [offline.emit("signup", {"n": n}) for n in range(70)]
    assert not offline.close(timeout=2)  # nobody there: the events stay in the spool
    server = PairingServer(port).start()  # where the events were meant to go
    try:
        client = Client(Config(server_url=server.url, spool_dir=spool_dir, spool_interval=0, max_batch=10))
        try:
            assert client.flush(timeout=60), client.stats
        finally:
            client.close(timeout=5)
        assert server.refused_one
        assert server.most_in_flight == 2  # two at once, never more
        assert sorted(server.ids()) == sorted(emitted)  # every event once: the refused batch alone was sent again
    finally:
        server.stop()
