"""Segment's HTTP Tracking API (/v1/*): each message becomes one event with the documented key,
id, timestamp and data; the write key as Segment's SDKs send it; a bad message refuses the whole
request, naming it; and the real `segment-analytics-python` against a real server (gzip on and
off, a dropped connection, a restart)."""

from __future__ import annotations

import base64
import gzip
import time
import uuid
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.helpers import app_flush, spool_count, store_count
from tlytics.ingest.capture_common import message_uuid
from tlytics.timefmt import format_rfc3339_us, parse_rfc3339_us

WRITE_KEY = "segment-write-key-0001"
READ_KEY = "segment-read-key-00001"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def message(kind: str = "track", n: int = 0, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": kind,
        "messageId": f"msg-{kind}-{n}",
        "userId": f"user-{n}",
        "timestamp": "2025-03-01T10:00:00.250Z",
        "context": {"library": {"name": "test", "version": "1"}, "ip": "10.0.0.1"},
    }
    if kind == "track":
        base.update(event="Order Completed", properties={"revenue": 12.5, "currency": "EUR"})
    return {**base, **fields}


async def stored(client: Any, app: web.Application) -> list[dict[str, Any]]:
    await app_flush(app)
    response = await client.get("/view?page_size=1000")
    assert response.status == 200
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


@pytest.fixture
async def keyed(aiohttp_client: Any, make_app: Any) -> tuple[Any, web.Application]:
    app = make_app(write_keys=(WRITE_KEY,), read_keys=(READ_KEY,))
    client = await aiohttp_client(app)
    client.read_headers = {"Authorization": f"Bearer {READ_KEY}"}
    return client, app


async def keyed_stored(client: Any, app: web.Application) -> list[dict[str, Any]]:
    await app_flush(app)
    response = await client.get("/view?page_size=1000", headers=client.read_headers)
    assert response.status == 200
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


async def test_track_becomes_one_event_keyed_by_its_name(client: Any, app: web.Application) -> None:
    response = await client.post("/v1/track", json=message(n=1))
    assert response.status == 200
    assert await response.json() == {"success": True}
    [event] = await stored(client, app)
    assert event["key"] == "Order Completed"
    assert event["id"] == message_uuid(b"segment", "msg-track-1", parse_rfc3339_us("2025-03-01T10:00:00.250Z"))
    assert uuid.UUID(event["id"]).version == 8
    assert event["timestamp"] == "2025-03-01T10:00:00.25Z"  # no sentAt: the timestamp as sent
    assert event["data"] == {
        "revenue": 12.5,
        "currency": "EUR",
        "userId": "user-1",
        "messageId": "msg-track-1",
        "context": {"library": {"name": "test", "version": "1"}, "ip": "10.0.0.1"},
    }


@pytest.mark.parametrize(
    ("kind", "fields", "key", "data"),
    [
        (
            "page",
            {"name": "Pricing", "category": "Docs", "properties": {"path": "/pricing"}},
            "$page",
            {"path": "/pricing", "name": "Pricing", "category": "Docs"},
        ),
        ("screen", {"name": "Home", "properties": {"tab": 2}}, "$screen", {"tab": 2, "name": "Home"}),
        ("identify", {"traits": {"email": "a@example.com"}}, "$identify", {"email": "a@example.com"}),
        ("group", {"groupId": "acme", "traits": {"plan": "pro"}}, "$group", {"plan": "pro", "groupId": "acme"}),
        ("alias", {"previousId": "anon-7"}, "$alias", {"previousId": "anon-7"}),
    ],
)
async def test_each_type_has_its_key_and_fields(
    client: Any, app: web.Application, kind: str, fields: dict[str, Any], key: str, data: dict[str, Any]
) -> None:
    sent = message(kind, n=2, **fields)
    del sent["type"]  # the route says it
    response = await client.post(f"/v1/{kind}", json=sent)
    assert response.status == 200, await response.text()
    [event] = await stored(client, app)
    assert event["key"] == key
    assert event["data"] == {**data, "userId": "user-2", "messageId": f"msg-{kind}-2", "context": sent["context"]}


async def test_batch_and_import_store_each_message_once_and_a_retry_adds_nothing(
    client: Any, app: web.Application
) -> None:
    batch = {"batch": [message(n=n) for n in range(5)] + [message("identify", n=9)]}
    for path in ("/v1/batch", "/v1/batch", "/v1/import"):  # a retry, then the same through /import
        response = await client.post(path, json=batch)
        assert response.status == 200, await response.text()
    events = await stored(client, app)
    assert len(events) == 6
    assert sorted(event["data"]["messageId"] for event in events) == sorted(m["messageId"] for m in batch["batch"])


async def test_sent_at_corrects_the_clients_clock(client: Any, app: web.Application) -> None:
    """Segment's rule: timestamp = receivedAt - (sentAt - timestamp). A client whose clock runs
    an hour ahead sends both an hour ahead: the event lands at (about) the server's time."""
    ahead_us = 3600 * 1_000_000
    event_at = time.time_ns() // 1000 - 5_000_000 + ahead_us  # 5 s ago, by the client's clock
    sent_at = time.time_ns() // 1000 + ahead_us
    before = time.time_ns() // 1000
    body = {"batch": [message(n=3, timestamp=format_rfc3339_us(event_at))], "sentAt": format_rfc3339_us(sent_at)}
    assert (await client.post("/v1/batch", json=body)).status == 200
    after = time.time_ns() // 1000
    [event] = await stored(client, app)
    corrected = parse_rfc3339_us(event["timestamp"])
    # receivedAt lies between before and after; the event happened 5 s before sending.
    assert before - 5_000_000 - 1000 <= corrected <= after - 5_000_000 + 1000


async def test_no_timestamp_means_arrival_and_no_message_id_means_a_fresh_id(client: Any, app: web.Application) -> None:
    sent = message(n=4)
    del sent["timestamp"], sent["messageId"]
    before = time.time_ns() // 1000
    assert (await client.post("/v1/track", json=sent)).status == 200
    [event] = await stored(client, app)
    assert parse_rfc3339_us(event["timestamp"]) >= before - 1000
    assert uuid.UUID(event["id"]).version == 7


async def test_a_property_named_like_a_field_keeps_the_properties_whole(client: Any, app: web.Application) -> None:
    sent = message(n=5, properties={"userId": "spoofed", "plan": "pro"})
    assert (await client.post("/v1/track", json=sent)).status == 200
    [event] = await stored(client, app)
    assert event["data"]["userId"] == "user-5"
    assert event["data"]["properties"] == {"userId": "spoofed", "plan": "pro"}


async def test_batch_context_is_merged_under_each_messages_own(client: Any, app: web.Application) -> None:
    sent = message(n=6, context={"ip": "10.0.0.9"})
    body = {"batch": [sent], "context": {"ip": "10.0.0.1", "library": {"name": "batchlib"}}}
    assert (await client.post("/v1/batch", json=body)).status == 200
    [event] = await stored(client, app)
    assert event["data"]["context"] == {"ip": "10.0.0.9", "library": {"name": "batchlib"}}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"event": None}, "event"),
        ({"event": ""}, "event"),
        ({"event": "x" * 201}, "event"),
        ({"userId": None}, "userId"),
        ({"type": "purchase"}, "type"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"messageId": 12}, "messageId"),
        ({"properties": [1, 2]}, "properties"),
        ({"context": "web"}, "context"),
    ],
)
async def test_one_bad_message_refuses_the_batch_naming_it(
    client: Any, app: web.Application, bad: dict[str, Any], field: str
) -> None:
    batch = {"batch": [message(n=0), message(n=1), message(n=2, **bad)]}
    response = await client.post("/v1/batch", json=batch)
    assert response.status == 400
    body = await response.json()
    assert body["index"] == 2 and body["field"] == field, body
    assert body["code"] == "invalid_request" and body["message"] == body["error"]  # Segment's client reads these
    assert spool_count(app) == 0
    await app_flush(app)
    assert store_count(app) == 0


async def test_a_body_that_is_not_a_batch_is_refused(client: Any) -> None:
    for body, field in ((b"[]", None), (b'{"batch": 3}', "batch"), (b"{", None)):
        response = await client.post("/v1/batch", data=body, headers={"Content-Type": "application/json"})
        assert response.status == 400
        assert (await response.json()).get("field") == field


async def test_gzip_body(client: Any, app: web.Application) -> None:
    body = gzip.compress(orjson.dumps({"batch": [message(n=n) for n in range(3)]}))
    response = await client.post(
        "/v1/batch", data=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status == 200
    assert len(await stored(client, app)) == 3


async def test_the_write_key_as_basic_user_or_in_the_body(keyed: tuple[Any, web.Application]) -> None:
    client, app = keyed
    assert (await client.post("/v1/track", json=message(n=1), headers=basic(WRITE_KEY))).status == 200
    assert (await client.post("/v1/track", json={**message(n=2), "writeKey": WRITE_KEY})).status == 200
    batch = {"batch": [message(n=3)], "writeKey": WRITE_KEY}
    assert (await client.post("/v1/batch", json=batch)).status == 200
    assert (await client.post("/v1/batch", json={"batch": [{**message(n=4), "writeKey": WRITE_KEY}]})).status == 200
    events = await keyed_stored(client, app)
    assert len(events) == 4
    assert all("writeKey" not in event["data"] for event in events)  # a key is never stored


@pytest.mark.parametrize(
    ("headers", "body_key", "status"),
    [
        ({}, None, 401),
        (basic("wrong-key-wrong-key-00"), None, 401),
        ({}, "wrong-key-wrong-key-00", 401),
        (basic(READ_KEY), None, 403),
        ({}, READ_KEY, 403),
        ({"Authorization": f"Bearer {READ_KEY}"}, WRITE_KEY, 403),  # a Bearer header decides
        (basic("wrong-key-wrong-key-00"), WRITE_KEY, 401),  # so does a Basic one
    ],
)
async def test_no_key_a_wrong_key_or_a_reading_key_is_refused(
    keyed: tuple[Any, web.Application], headers: dict[str, str], body_key: str | None, status: int
) -> None:
    client, app = keyed
    body: dict[str, Any] = {"batch": [message(n=1)]}
    if body_key is not None:
        body["writeKey"] = body_key
    response = await client.post("/v1/batch", json=body, headers=headers)
    assert response.status == status
    answer = await response.json()
    assert answer["needs_scope"] == "write"
    assert WRITE_KEY not in str(answer) and READ_KEY not in str(answer)
    assert spool_count(app) == 0


async def test_two_different_keys_in_one_body_are_refused(keyed: tuple[Any, web.Application]) -> None:
    client, app = keyed
    body = {"batch": [{**message(n=1), "writeKey": WRITE_KEY}, {**message(n=2), "writeKey": "other-key-other-key-00"}]}
    response = await client.post("/v1/batch", json=body)
    assert response.status == 400
    assert (await response.json())["field"] == "writeKey"
    assert spool_count(app) == 0


async def test_limits_of_events_apply(aiohttp_client: Any, make_app: Any) -> None:
    app = make_app(max_events_per_request=3, max_body_bytes=4096, rate_limit=None)
    client = await aiohttp_client(app)
    response = await client.post("/v1/batch", json={"batch": [message(n=n) for n in range(4)]})
    assert response.status == 413
    response = await client.post("/v1/track", json=message(n=1, properties={"pad": "x" * 5000}))
    assert response.status == 413
    assert spool_count(app) == 0


async def test_rate_limit_and_metrics_as_for_events(aiohttp_client: Any, make_app: Any) -> None:
    from tlytics.setting_values import rate

    app = make_app(write_keys=(WRITE_KEY,), rate_limit=rate("1/m,burst=1"))
    client = await aiohttp_client(app)
    body = {"batch": [message(n=1)], "writeKey": WRITE_KEY}
    assert (await client.post("/v1/batch", json=body)).status == 200
    limited = await client.post("/v1/batch", json=body)
    assert limited.status == 429
    assert "Retry-After" in limited.headers
    assert (await limited.json())["code"] == "rate_limited"
    metrics = await (await client.get("/metrics")).text()
    assert 'route="/v1/batch"' in metrics


async def test_json_that_cannot_be_stored_is_refused_not_a_500(client: Any, app: web.Application) -> None:
    good = orjson.dumps(message(n=0)).decode()
    bad_messages = (
        '{"type": "track", "event": "e", "userId": "u", "properties": {"s": "\\ud800"}}',  # a lone surrogate
        '{"type": "track", "event": "e", "userId": "u", "properties": {"x": 1e400}}',
        '{"type": "track", "event": "e", "userId": "u", "properties": {"x": NaN}}',
    )
    for bad in bad_messages:
        body = f'{{"batch": [{good}, {bad}]}}'.encode()
        response = await client.post("/v1/batch", data=body, headers={"Content-Type": "application/json"})
        assert response.status == 400, bad
        answer = await response.json()
        assert answer.get("index", 1) == 1, answer
    assert spool_count(app) == 0
