"""Request bodies as clients really send them: content codings (ours to decode, so every
failure is a JSON 4xx), and clients that stop sending halfway (dropped after --body-timeout)."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.helpers import app_flush, make_client, spool_count, store_count

BODY = b'[{"key": "coded", "data": {"n": 1}}]'
GZIPPED = gzip.compress(BODY)


def _flipped(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", GZIPPED),
        ("GZip", GZIPPED),
        ("x-gzip", GZIPPED),
        ("gzip", gzip.compress(BODY[:10]) + gzip.compress(BODY[10:])),  # two gzip members
        ("deflate", zlib.compress(BODY)),
        ("deflate", _raw_deflate(BODY)),
        ("identity", BODY),
    ],
    ids=["gzip", "gzip-mixed-case", "x-gzip", "gzip-two-members", "deflate-zlib", "deflate-raw", "identity"],
)
async def test_supported_encodings_are_decoded(client: Any, app: web.Application, encoding: str, body: bytes) -> None:
    response = await client.post(
        "/events", data=body, headers={"Content-Type": "application/json", "Content-Encoding": encoding}
    )
    assert response.status == 200, await response.text()
    await app_flush(app)
    assert store_count(app) == 1


@pytest.mark.parametrize(
    "body",
    [_flipped(GZIPPED), BODY, GZIPPED[:-6], GZIPPED[:5], b"", GZIPPED + b"trailing garbage"],
    ids=["flipped-bytes", "not-gzip", "truncated", "header-only", "empty", "trailing-garbage"],
)
async def test_a_corrupt_gzip_body_is_400_json(client: Any, app: web.Application, body: bytes) -> None:
    for path in ("/events", "/batch", "/lookup"):
        response = await client.post(
            path, data=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )
        assert response.status == 400, (path, await response.text())
        answer = await response.json()
        assert answer["field"] == "Content-Encoding" and "gzip" in answer["error"]
    assert spool_count(app) == 0


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br", "snappy", "gzip;q=1"])
async def test_unsupported_encodings_are_415_json(client: Any, app: web.Application, encoding: str) -> None:
    for path in ("/events", "/lookup"):
        response = await client.post(
            path, data=GZIPPED, headers={"Content-Type": "application/json", "Content-Encoding": encoding}
        )
        assert response.status == 415, (path, await response.text())
        assert (await response.json())["field"] == "Content-Encoding"
    assert spool_count(app) == 0


async def test_a_gzip_bomb_past_max_body_is_413(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    app = make_app(max_body_bytes=64 * 1024)
    client = await aiohttp_client(app)
    exactly = b'[{"key": "fits", "data": {"pad": "' + b"x" * (64 * 1024 - 40) + b'"}}]'
    assert len(exactly) <= 64 * 1024
    fits = await client.post(
        "/events", data=gzip.compress(exactly), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert fits.status == 200, await fits.text()
    bomb = gzip.compress(b"[" + b" " * (20 * 1024 * 1024) + b"]")
    response = await client.post(
        "/events", data=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status == 413
    body = await response.json()
    assert body["limit"] == 64 * 1024 and body["limit_of"] == "bytes_per_body"


async def _read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> tuple[bytes, bool]:
    """Everything the server sends, and whether it closed the connection within timeout_s."""
    received = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if not chunk:
            return received, True
        received += chunk
    return received, False


async def test_a_client_that_stops_mid_body_is_dropped_as_a_client_error(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    app = make_app(body_timeout_s=0.5)
    client = await aiohttp_client(app)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    with capture_logs() as logs:
        started = time.monotonic()
        writer.write(
            b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n" + BODY[:20]
        )
        await writer.drain()
        # Generous bounds: the point is "dropped, and not by a 500", not how fast.
        received, closed = await _read_until_closed(reader, timeout_s=60.0)
        elapsed = time.monotonic() - started
    writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received
    assert b'"error"' in body and b"did not arrive" in body
    assert closed, "the server kept the stalled connection open"
    assert elapsed >= 0.5
    assert any(log["event"] == "client_body_timeout" and log["log_level"] == "warning" for log in logs)
    assert not any(log["log_level"] in ("error", "critical") for log in logs), logs
    assert [log["status"] for log in logs if log["event"] == "request"] == [408]
    assert spool_count(app) == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'status="500"' not in metrics and 'status="408"' in metrics
    assert 'tlytics_requests_rejected_total{reason="body_timeout"} 1.0' in metrics


def test_body_timeout_setting_from_flag_and_environment(capsys: Any) -> None:
    from tlytics.cli import parse_settings

    assert parse_settings([], {})[0].body_timeout_s == 30.0
    assert parse_settings([], {"TLYTICS_BODY_TIMEOUT": "2s"})[0].body_timeout_s == 2.0
    assert parse_settings(["--body-timeout", "500ms"], {"TLYTICS_BODY_TIMEOUT": "2s"})[0].body_timeout_s == 0.5
    with pytest.raises(SystemExit):
        parse_settings(["--body-timeout", "0"], {})
    assert "must be longer than 0" in capsys.readouterr().err


async def test_gzip_body_is_accepted(client: Any, app: web.Application) -> None:
    body = gzip.compress(b'[{"key": "zipped", "data": {"n": 1}}]')
    response = await client.post(
        "/events", data=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status == 200
    await app_flush(app)
    assert store_count(app) == 1


async def test_gzip_bomb_is_413_not_out_of_memory(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client, app = await make_client(aiohttp_client, make_app, max_body_bytes=1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    bomb = compressor.compress(b"[" + b" " * (200 * 1024 * 1024)) + compressor.flush()
    assert len(bomb) < 1024 * 1024  # small on the wire, 200 MiB once inflated
    response = await client.post(
        "/events", data=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status == 413
    assert "larger than" in (await response.json())["error"]
    assert spool_count(app) == 0
