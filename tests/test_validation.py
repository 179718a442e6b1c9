"""Every bad input gets a 4xx JSON error that says what and where, and changes nothing."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import app_flush, spool_count, store_count

GOOD = {"key": "ok"}

# (body, expected error substring, index, field)
BAD_EVENTS: list[tuple[Any, str, int | None, str | None]] = [
    ([GOOD, "not an object"], "must be a JSON object", 1, None),
    ([GOOD, 42], "must be a JSON object", 1, None),
    ([GOOD, {"data": {}}], "key is required", 1, "key"),
    ([{"key": ""}], "must not be empty", 0, "key"),
    ([{"key": "x" * 201}], "longer than 200", 0, "key"),
    ([{"key": 7}], "must be a string", 0, "key"),
    ([{"key": ["a"]}], "must be a string", 0, "key"),
    ([{"key": "tab\there"}], "control characters", 0, "key"),
    ([{"key": "nul\u0000"}], "control characters", 0, "key"),
    ([GOOD, GOOD, {"key": "a", "data": [1, 2]}], "data must be a JSON object", 2, "data"),
    ([{"key": "a", "data": "text"}], "data must be a JSON object", 0, "data"),
    ([{"key": "a", "timestamp": "yesterday"}], "RFC 3339", 0, "timestamp"),
    ([{"key": "a", "timestamp": "2025-08-25 10:00"}], "RFC 3339", 0, "timestamp"),
    ([{"key": "a", "timestamp": "2025-08-25T10:00:00"}], "RFC 3339", 0, "timestamp"),
    ([{"key": "a", "timestamp": "2025-13-40T10:00:00Z"}], "timestamp", 0, "timestamp"),
    ([{"key": "a", "timestamp": 1724580000}], "RFC 3339", 0, "timestamp"),
    ([{"key": "a", "id": "not-a-uuid"}], "UUID", 0, "id"),
    ([{"key": "a", "id": 12345}], "UUID", 0, "id"),
    ([{"key": "a", "id": "0190f7c41234-7abc-8def-0123456789ab0"}], "UUID", 0, "id"),
    ([{"key": "a", "timestmap": "2025-08-25T10:00:00Z"}], "unknown field 'timestmap'", 0, "timestmap"),
]


@pytest.mark.parametrize("path", ["/events", "/batch"])
@pytest.mark.parametrize(("events", "message", "index", "field"), BAD_EVENTS)
async def test_bad_event_rejects_whole_request(
    client: Any, app: web.Application, path: str, events: Any, message: str, index: int | None, field: str | None
) -> None:
    body = events if path == "/events" else {"events": events}
    response = await client.post(path, json=body)
    assert response.status == 400
    error = await response.json()
    assert message in error["error"]
    assert error.get("index") == index
    assert error.get("field") == field
    # Nothing of the request was spooled, so nothing can reach the store.
    assert spool_count(app) == 0
    await app_flush(app)
    assert store_count(app) == 0


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        ("/events", b'[{"key": "a"', "invalid JSON"),
        ("/events", b"", "invalid JSON"),
        ("/events", b"\xff\xfe", "invalid JSON"),
        ("/events", b'{"events": []}', "JSON array"),
        ("/events", b'"just a string"', "JSON array"),
        ("/batch", b"[]", "JSON object"),
        ("/batch", b'{"evnts": []}', '"events" must be a JSON array'),
        ("/batch", b'{"events": {"key": "a"}}', '"events" must be a JSON array'),
        ("/batch", b"{bad json}", "invalid JSON"),
        ("/events", b"[NaN]", "invalid JSON"),
    ],
)
async def test_malformed_bodies_are_400(client: Any, app: web.Application, path: str, raw: bytes, message: str) -> None:
    response = await client.post(path, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert spool_count(app) == 0


async def test_invalid_json_reports_position(client: Any) -> None:
    response = await client.post("/events", data=b'[{"key": "a"},, ]', headers={"Content-Type": "application/json"})
    body = await response.json()
    assert response.status == 400
    assert isinstance(body["position"], int) and body["position"] > 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream"])
async def test_non_json_content_type_is_415(client: Any, app: web.Application, content_type: str) -> None:
    response = await client.post("/events", data=b'[{"key": "a"}]', headers={"Content-Type": content_type})
    assert response.status == 415
    body = await response.json()
    assert content_type in body["error"]
    assert body["field"] == "Content-Type"
    assert spool_count(app) == 0


async def test_json_content_type_with_charset_and_suffix_is_accepted(client: Any) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.tlytics+json"):
        response = await client.post("/events", data=b'[{"key": "a"}]', headers={"Content-Type": content_type})
        assert response.status == 200, content_type


async def test_body_over_limit_is_413_json(client: Any, app: web.Application) -> None:
    too_big = b'[{"key": "a", "data": {"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}}]'
    response = await client.post("/events", data=too_big, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert "larger than" in (await response.json())["error"]
    assert spool_count(app) == 0


async def test_too_many_events_is_413(client: Any, app: web.Application) -> None:
    response = await client.post("/events", json=[GOOD] * 10_001)
    assert response.status == 413
    assert "too many events" in (await response.json())["error"]
    assert spool_count(app) == 0


async def test_unsupported_content_encoding_is_not_a_500(client: Any) -> None:
    response = await client.post(
        "/events",
        data=gzip.compress(b'[{"key": "a"}]'),
        headers={"Content-Type": "application/json", "Content-Encoding": "br"},
    )
    assert 400 <= response.status < 500


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'[{"key": "a", "data": {"s": "\xff"}}]', "invalid JSON"),
        (b'[{"key": "bad\xfe"}]', "invalid JSON"),
        (b'[{"key": "a\\n"}]', "control characters"),
        (b'[{"key": "a", "id": "0190f7c4-1234-7abc-8def-0123456789ab\\n"}]', "UUID"),
    ],
)
async def test_invalid_utf8_and_trailing_newlines_are_refused(client: Any, app: web.Application, raw: bytes, message: str) -> None:
    response = await client.post("/events", data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert spool_count(app) == 0
