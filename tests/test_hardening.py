"""Limits, gzip, API keys, metrics and health under pressure, against the real app."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.helpers import app_flush, spool_count, store_count

WRITE_KEY = "w" * 24
READ_KEY = "r" * 24


async def make_client(
    aiohttp_client: Any, make_app: Callable[..., web.Application], **overrides: Any
) -> tuple[Any, web.Application]:
    app = make_app(**overrides)
    return await aiohttp_client(app), app


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


async def test_one_event_over_the_size_limit_is_413_with_its_index(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client, app = await make_client(aiohttp_client, make_app, max_event_bytes=2000)
    events = [{"key": "small"}, {"key": "big", "data": {"pad": "x" * 3000}}]
    response = await client.post("/events", json=events)
    assert response.status == 413
    body = await response.json()
    assert body["index"] == 1 and body["limit"] == 2000
    assert spool_count(app) == 0
    ok = await client.post("/events", json=[{"key": "fine", "data": {"pad": "x" * 500}}])
    assert ok.status == 200


async def test_event_count_limit_is_configurable(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    client, _ = await make_client(aiohttp_client, make_app, max_events_per_request=3)
    assert (await client.post("/events", json=[{"key": "a"}] * 3)).status == 200
    response = await client.post("/events", json=[{"key": "a"}] * 4)
    assert response.status == 413
    assert (await response.json())["limit"] == 3


async def test_write_and_read_keys_are_separate(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    client, app = await make_client(aiohttp_client, make_app, write_keys=(WRITE_KEY,), read_keys=(READ_KEY,))
    write = {"Authorization": f"Bearer {WRITE_KEY}"}
    read = {"Authorization": f"Bearer {READ_KEY}"}
    events = [{"key": "a"}]

    missing = await client.post("/events", json=events)
    assert missing.status == 401
    assert "write key" in (await missing.json())["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.post("/events", json=events, headers={"Authorization": "Bearer nope"})).status == 401
    assert (await client.post("/batch", json={"events": events}, headers=read)).status == 403  # a read key never writes
    assert spool_count(app) == 0
    assert (await client.post("/events", json=events, headers=write)).status == 200
    assert (
        await client.post("/batch", json={"events": events}, headers={"Authorization": f"bearer {WRITE_KEY}"})
    ).status == 200

    assert (await client.get("/view")).status == 401
    assert (await client.get("/view", headers=write)).status == 403  # a write key never reads
    assert (await client.get("/view", headers=read)).status == 200
    assert (await client.get("/export", headers=write)).status == 403
    assert (await client.get("/export", headers=read)).status == 200
    assert (await client.post("/lookup", json={"ids": []}, headers=write)).status == 403
    assert (await client.get("/metrics", headers=write)).status == 403
    assert (await client.get("/metrics", headers=read)).status == 200
    assert (await client.get("/health")).status == 200  # stays open


async def test_keys_are_never_logged(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    client, _ = await make_client(aiohttp_client, make_app, write_keys=(WRITE_KEY,))
    with capture_logs() as logs:
        await client.post("/events", json=[{"key": "a"}], headers={"Authorization": f"Bearer {WRITE_KEY}"})
        await client.post("/events", json=[{"key": "a"}], headers={"Authorization": "Bearer wrong-key-0123456789"})
    assert logs
    assert WRITE_KEY not in repr(logs) and "wrong-key" not in repr(logs)


async def test_open_server_on_a_public_address_warns(make_app: Callable[..., web.Application]) -> None:
    from aiohttp.test_utils import TestServer

    app = make_app(host="0.0.0.0")
    with capture_logs() as logs:
        async with TestServer(app):
            pass
    assert {"no_write_keys", "no_read_keys"} <= {log["event"] for log in logs}


async def test_spool_full_is_503_and_health_says_so(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client, app = await make_client(aiohttp_client, make_app, spool_max_bytes=64 * 1024)
    statuses = []
    for _ in range(40):
        response = await client.post("/events", json=[{"key": "fill", "data": {"pad": "x" * 4000}}] * 5)
        statuses.append(response.status)
        if response.status == 503:
            assert response.headers["Retry-After"] == "1"
            assert "spool is full" in (await response.json())["error"]
            break
    assert statuses[-1] == 503, statuses
    accepted_before = (await (await client.get("/health")).json())["accepted_events"]
    health = await client.get("/health")
    assert health.status == 503
    assert any("spool is full" in p for p in (await health.json())["problems"])
    # The writer drains, the spool shrinks, and the server takes events again by itself.
    await app_flush(app)
    assert (await client.get("/health")).status == 200
    assert (await client.post("/events", json=[{"key": "again"}])).status == 200
    await app_flush(app)
    assert store_count(app) == accepted_before + 1


async def test_metrics_count_what_happened(client: Any, app: web.Application) -> None:
    await client.post("/events", json=[{"key": "a", "id": "0190f7c4-1234-7abc-8def-0123456789ab"}] * 3)
    await client.post("/events", json=[{"key": ""}])
    await client.post("/events", data=b"x", headers={"Content-Type": "text/plain"})
    await app_flush(app)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")
    }
    assert figures["tlytics_events_accepted_total"] == 3
    assert figures["tlytics_events_stored_total"] == 1
    assert figures["tlytics_duplicates_ignored_total"] == 2
    assert figures['tlytics_requests_rejected_total{reason="invalid"}'] == 1
    assert figures['tlytics_requests_rejected_total{reason="unsupported_media_type"}'] == 1
    assert figures["tlytics_spool_entries"] == 0
    assert figures["tlytics_writer_batches_total"] >= 1
    assert any(k.startswith("tlytics_request_duration_seconds_bucket") for k in figures)


@pytest.mark.parametrize(
    ("argv", "attribute", "value"),
    [
        (["--max-body", "2MiB"], "max_body_bytes", 2 * 1024 * 1024),
        (["--max-events", "50"], "max_events_per_request", 50),
        (["--max-event-size", "64kB"], "max_event_bytes", 64_000),
        (["--spool-max", "1GiB"], "spool_max_bytes", 1024**3),
        (["--write-key", WRITE_KEY, "--write-key", "x" * 20], "write_keys", (WRITE_KEY, "x" * 20)),
    ],
)
def test_limit_and_key_flags(argv: list[str], attribute: str, value: object) -> None:
    from tlytics.cli import parse_settings

    settings, _ = parse_settings(argv, {})
    assert getattr(settings, attribute) == value


def test_key_environment_lists_and_flag_precedence(capsys: pytest.CaptureFixture[str]) -> None:
    from tlytics.cli import parse_settings

    environ = {"TLYTICS_WRITE_KEYS": f"{WRITE_KEY}, {'y' * 20}", "TLYTICS_READ_KEYS": READ_KEY}
    settings, _ = parse_settings([], environ)
    assert settings.write_keys == (WRITE_KEY, "y" * 20) and settings.read_keys == (READ_KEY,)
    flagged, _ = parse_settings(["--write-key", "z" * 20], environ)
    assert flagged.write_keys == ("z" * 20,)
    with pytest.raises(SystemExit):
        parse_settings([], {"TLYTICS_WRITE_KEYS": "short"})
    assert "short" not in capsys.readouterr().err  # a rejected key is not echoed
