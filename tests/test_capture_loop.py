"""The capture routes (Segment's `/v1/batch`, PostHog's `/batch/`) under the rule of `/events`
and `/batch` (issue 19 items 1-2, for the routes of issue 23): cheap checks first, the parse,
translation and validation of anything but a small body on the body thread, 503 + Retry-After
when its queue is full.

Before, a capture body was parsed (orjson) and translated message by message on the event loop:
10 MiB of tiny messages, or 10 KB of gzip inflating to them, held the loop for seconds. The
stall test is that of tests/test_loop_stall.py (same bounds, same probe) with capture bodies.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from bench.loop_stall import health_latency_s, latency_summary, many_gzip_members
from tests.helpers import ServerProcess, free_port, spool_count
from tests.test_loop_stall import MAX_BOUND_MS, P99_BOUND_MS
from tlytics.ingest.body_work import BODY_QUEUE_MAX, BODY_THREADS, BODY_WORKERS
from tlytics.ingest.capture_common import message_uuid
from tlytics.timefmt import parse_rfc3339_us

MIB = 1024 * 1024


def _gzip_of_parts(head: bytes, repeated: bytes, tail: bytes, inflated_bytes: int) -> bytes:
    """gzip of `head + repeated * n + tail`, about `inflated_bytes` once inflated (~10 KB for 10 MiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    count = max(0, (inflated_bytes - len(head) - len(tail)) // len(repeated))
    parts = [compressor.compress(head)]
    block = repeated * 65_536
    for _ in range(count // 65_536):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(repeated * (count % 65_536) + tail))
    parts.append(compressor.flush())
    return b"".join(parts)


def _tiny_messages(head: bytes, message: bytes, tail: bytes, inflated_bytes: int = 10 * MIB) -> bytes:
    """A batch of as many tiny messages as fit in `inflated_bytes` (the last without a comma)."""
    count = (inflated_bytes - len(head) - len(tail)) // (len(message) + 1)
    return head + b",".join([message] * count) + tail


SEGMENT_MESSAGE = b'{"type":"page","userId":1}'
POSTHOG_EVENT = b'{"event":"e","distinct_id":1}'
GZIP = {"Content-Encoding": "gzip"}
JSON = {"Content-Type": "application/json"}

# (path, extra headers, body): what froze the loop, each refused (400 or 413), nothing stored.
HOSTILE: dict[str, tuple[str, dict[str, str], bytes]] = {
    "segment tiny messages": ("/v1/batch", {}, _tiny_messages(b'{"batch":[', SEGMENT_MESSAGE, b"]}")),
    "segment gzip bomb of messages": (
        "/v1/batch",
        GZIP,
        _gzip_of_parts(b'{"batch":[', SEGMENT_MESSAGE + b",", SEGMENT_MESSAGE + b"]}", 10 * MIB),
    ),
    "segment gzip bomb in one message": (
        "/v1/batch",
        GZIP,
        _gzip_of_parts(b'{"batch":[{"type":"page","userId":1,"properties":{"a":[', b"{},", b"{}]}}]}", 10 * MIB),
    ),
    "segment gzip members": ("/v1/batch", GZIP, gzip.compress(b'{"batch":[]}') + gzip.compress(b"") * 100_000),
    # Within the limits (10 000 messages), but the last one bad: every message is translated.
    "segment full batch, last bad": (
        "/v1/batch",
        GZIP,
        gzip.compress(b'{"batch":[' + b",".join([SEGMENT_MESSAGE] * 9_999) + b',{"type":"page"}]}'),
    ),
    "posthog tiny events": ("/batch/", {}, _tiny_messages(b"[", POSTHOG_EVENT, b"]")),
    "posthog gzip-js bomb of events": (
        "/batch/?compression=gzip-js",
        {},
        _gzip_of_parts(b'{"batch":[', POSTHOG_EVENT + b",", POSTHOG_EVENT + b"]}", 10 * MIB),
    ),
    "posthog gzip bomb in one event": (
        "/e/",
        GZIP,
        _gzip_of_parts(b'{"event":"e","distinct_id":1,"properties":{"a":[', b"{},", b"{}]}}", 10 * MIB),
    ),
    "posthog gzip members": ("/batch/", GZIP, many_gzip_members(100_000)),
    "posthog full batch, last bad": (
        "/batch/",
        GZIP,
        gzip.compress(b"[" + b",".join([POSTHOG_EVENT] * 9_999) + b',{"event":"e"}]'),
    ),
}


def _post(port: int, path: str, body: bytes, headers: dict[str, str], *, timeout_s: float) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def _measure(port: int, bodies: list[tuple[str, dict[str, str], bytes]], *, duration_s: float) -> dict[str, Any]:
    """bench.loop_stall.measure with these bodies: three senders, a /health probe every 10 ms."""
    timeout_s = 120.0
    stop = threading.Event()
    statuses: list[int] = []
    latencies: list[float] = []

    def send(index: int) -> None:
        for round_ in range(10_000):
            if stop.is_set():
                return
            path, headers, body = bodies[(index + round_) % len(bodies)]
            try:
                statuses.append(_post(port, path, body, headers, timeout_s=timeout_s)[0])
            except OSError:
                statuses.append(0)

    senders = [threading.Thread(target=send, args=(index,), daemon=True) for index in range(3)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline or (len(statuses) < len(bodies) and time.monotonic() < deadline + timeout_s):
        latency = health_latency_s(port, timeout_s=timeout_s)
        latencies.append(latency if latency is not None else float("inf"))
        time.sleep(0.01)
    stop.set()
    for sender in senders:
        sender.join(timeout_s)
    return latency_summary(latencies, statuses)


def test_each_hostile_capture_body_is_refused_saying_why(tmp_path: Path) -> None:
    """One at a time: each refused with the answer naming the limit, nothing stored."""
    server = ServerProcess(tmp_path / "refused.db", extra_args=["--log-level", "error"], port=free_port()).start()
    try:
        answers = {
            name: _post(server.port, path, body, headers, timeout_s=120.0)
            for name, (path, headers, body) in HOSTILE.items()
        }
        health = server.wait_drained()
    finally:
        server.stop()
    assert answers["segment tiny messages"][0] == 413
    assert "too many messages" in answers["segment tiny messages"][1]["error"]
    assert answers["segment gzip bomb of messages"][0] == 413
    assert answers["segment gzip bomb in one message"][0] == 413
    assert answers["segment gzip bomb in one message"][1]["index"] == 0
    assert answers["segment gzip members"][0] == 400
    assert answers["segment full batch, last bad"][0] == 400
    assert answers["segment full batch, last bad"][1]["index"] == 9_999
    assert answers["posthog tiny events"][0] == 413
    assert answers["posthog gzip-js bomb of events"][0] == 413
    assert answers["posthog gzip bomb in one event"][0] == 413
    assert answers["posthog gzip members"][0] == 400
    assert answers["posthog full batch, last bad"][0] == 400
    assert answers["posthog full batch, last bad"][1]["index"] == 9_999
    assert health["spool_entries"] == 0


def test_health_answers_promptly_while_hostile_capture_bodies_arrive(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "stall.db", extra_args=["--log-level", "error"], port=free_port()).start()
    try:
        figures = _measure(server.port, list(HOSTILE.values()), duration_s=6.0)
        stored = server.stored_ids()
    finally:
        server.stop()
    assert figures["hostile_posts"] >= len(HOSTILE), figures  # every hostile body was sent
    assert set(figures["statuses"]) <= {400, 413, 503}, figures  # each refused
    assert stored == []
    assert figures["probes"] >= 20, figures
    assert figures["p99_ms"] <= P99_BOUND_MS, figures
    assert figures["max_ms"] <= MAX_BOUND_MS, figures


def _segment_batch(count: int) -> dict[str, Any]:
    messages = [
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": f"large-{n}",
            "userId": f"user-{n}",
            "timestamp": "2026-12-07T10:00:00.250Z",
            "properties": {"n": n, "plan": "pro"},
        }
        for n in range(count)
    ]
    return {"batch": messages, "sentAt": "2026-12-07T10:00:01Z"}


def _posthog_batch(count: int) -> dict[str, Any]:
    events = [
        {
            "event": "$pageview",
            "uuid": f"01890000-0000-7000-8000-{n:012x}",
            "distinct_id": f"user-{n}",
            "timestamp": "2026-12-07T10:00:00.250Z",
            "properties": {"n": n, "$current_url": f"https://example.com/{n}"},
        }
        for n in range(count)
    ]
    return {"api_key": "unused", "batch": events}


def test_a_large_valid_capture_batch_is_stored_exactly_once(tmp_path: Path) -> None:
    """Past every inline threshold (the work runs on the body thread): each message stored once,
    with its id, a retry of the whole batch (sentAt later) adding nothing."""
    count = 5_000
    segment = _segment_batch(count)
    posthog = _posthog_batch(count)
    assert len(orjson.dumps(segment)) > 64 * 1024 and len(orjson.dumps(posthog)) > 64 * 1024
    server = ServerProcess(tmp_path / "large.db", extra_args=["--log-level", "error"], port=free_port()).start()
    try:
        assert _post(server.port, "/v1/batch", orjson.dumps(segment), {}, timeout_s=120.0) == (200, {"success": True})
        retry = {**segment, "sentAt": "2026-12-07T10:05:00Z"}
        assert _post(server.port, "/v1/batch", gzip.compress(orjson.dumps(retry)), GZIP, timeout_s=120.0)[0] == 200
        assert _post(server.port, "/batch/", orjson.dumps(posthog), {}, timeout_s=120.0) == (200, {"status": 1})
        assert _post(server.port, "/batch/", gzip.compress(orjson.dumps(posthog)), GZIP, timeout_s=120.0)[0] == 200
        server.wait_drained(timeout_s=60.0)
        stored = server.stored_ids()
    finally:
        server.stop()
    client_us = parse_rfc3339_us("2026-12-07T10:00:00.250Z")
    expected = {message_uuid(b"segment", f"large-{n}", client_us) for n in range(count)}
    expected |= {event["uuid"] for event in posthog["batch"]}
    assert len(stored) == 2 * count
    assert set(stored) == expected


async def test_a_large_capture_body_beyond_the_body_queue_is_503_with_retry_after(
    aiohttp_client: Any, make_app: Any
) -> None:
    """Every body thread busy and its queue full: a large capture body is refused at once, as a
    large /batch body is, with Retry-After and the SDK's own error fields; nothing stored."""
    app: web.Application = make_app()
    client = await aiohttp_client(app)
    workers = app[BODY_WORKERS]
    release = threading.Event()
    busy = [asyncio.ensure_future(workers.run(release.wait, 30)) for _ in range(BODY_THREADS + BODY_QUEUE_MAX)]
    try:
        await asyncio.sleep(0)
        segment = await client.post("/v1/batch", data=orjson.dumps(_segment_batch(200)), headers=JSON)
        posthog = await client.post("/batch/", data=orjson.dumps(_posthog_batch(200)), headers=JSON)
    finally:
        release.set()
        await asyncio.gather(*busy)
    assert segment.status == 503 and segment.headers["Retry-After"] == "1"
    assert (await segment.json())["code"] == "unavailable"
    assert posthog.status == 503 and posthog.headers["Retry-After"] == "1"
    assert (await posthog.json())["code"] == "unavailable"
    assert spool_count(app) == 0


@pytest.mark.parametrize("path", ["/v1/batch", "/batch/"])
async def test_a_small_capture_body_still_goes_through_on_the_loop(
    aiohttp_client: Any, make_app: Any, path: str
) -> None:
    """Below the inline threshold the body threads are not asked: a small batch is taken even
    while they are all busy."""
    app: web.Application = make_app()
    client = await aiohttp_client(app)
    workers = app[BODY_WORKERS]
    release = threading.Event()
    busy = [asyncio.ensure_future(workers.run(release.wait, 30)) for _ in range(BODY_THREADS + BODY_QUEUE_MAX)]
    try:
        await asyncio.sleep(0)
        body = _segment_batch(3) if path == "/v1/batch" else _posthog_batch(3)
        response = await client.post(path, data=orjson.dumps(body), headers=JSON)
    finally:
        release.set()
        await asyncio.gather(*busy)
    assert response.status == 200, await response.text()
    assert spool_count(app) == 1
