"""PostHog's capture API (/capture/, /batch/, /e/, /i/v0/e/): each event becomes one event with
its name as key, its uuid as id and distinct_id kept; the bodies posthog-js and posthog-python
send (gzip, gzip-js, base64 forms); a bad event refuses the whole request, naming it; and the
real `posthog` client against a real server."""

from __future__ import annotations

import base64
import gzip
import time
import uuid
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web

from tests.helpers import app_flush, spool_count
from tlytics.timefmt import format_rfc3339_us, parse_rfc3339_us

API_KEY = "phc_posthog-key-000001"
PAGE = "https://shop.example"


def ph_event(n: int = 0, name: str = "$pageview", **fields: Any) -> dict[str, Any]:
    return {
        "event": name,
        "uuid": str(uuid.UUID(int=(0x0190_0000_0000_7000_8000_0000_0000_0000 + n))),
        "distinct_id": f"user-{n}",
        "timestamp": "2025-03-01T10:00:00Z",
        "properties": {"$current_url": "https://shop.example/", "$lib": "web", "plan": "pro"},
        **fields,
    }


async def stored(client: Any, app: web.Application, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    await app_flush(app)
    response = await client.get("/view?page_size=1000", headers=headers or {})
    assert response.status == 200
    events: list[dict[str, Any]] = (await response.json())["events"]
    return events


@pytest.mark.parametrize("path", ["/capture/", "/batch/", "/e/", "/i/v0/e/"])
async def test_every_route_takes_every_shape(client: Any, app: web.Application, path: str) -> None:
    bodies = [ph_event(1), [ph_event(2), ph_event(3)], {"api_key": API_KEY, "batch": [ph_event(4)]}]
    for body in bodies:
        response = await client.post(path, json=body)
        assert response.status == 200, await response.text()
        assert await response.json() == {"status": 1}
    events = await stored(client, app)
    assert sorted(event["data"]["distinct_id"] for event in events) == [f"user-{n}" for n in range(1, 5)]


async def test_an_event_keeps_its_name_uuid_and_distinct_id(client: Any, app: web.Application) -> None:
    sent = ph_event(7, "signed_up", **{"$set": {"email": "a@example.com"}})
    sent["properties"]["token"] = API_KEY  # as posthog-js puts it: never stored
    assert (await client.post("/e/", json=[sent])).status == 200
    [event] = await stored(client, app)
    assert event["key"] == "signed_up"
    assert event["id"] == sent["uuid"]
    assert event["timestamp"] == "2025-03-01T10:00:00Z"
    assert event["data"] == {
        "$current_url": "https://shop.example/",
        "$lib": "web",
        "plan": "pro",
        "distinct_id": "user-7",
        "$set": {"email": "a@example.com"},
    }


async def test_a_retried_event_is_stored_once(client: Any, app: web.Application) -> None:
    for _ in range(3):
        assert (await client.post("/batch/", json={"batch": [ph_event(1), ph_event(2)]})).status == 200
    assert len(await stored(client, app)) == 2


async def test_distinct_id_from_properties_as_posthog_js_sends_it(client: Any, app: web.Application) -> None:
    sent = ph_event(8)
    del sent["distinct_id"]
    sent["properties"]["distinct_id"] = "from-properties"
    assert (await client.post("/e/", json=sent)).status == 200
    [event] = await stored(client, app)
    assert event["data"]["distinct_id"] == "from-properties"


async def test_sent_at_and_offset_set_the_time_by_the_servers_clock(client: Any, app: web.Application) -> None:
    ahead_us = 7200 * 1_000_000  # a client clock two hours fast
    now_us = time.time_ns() // 1000
    skewed = ph_event(1, timestamp=format_rfc3339_us(now_us + ahead_us - 3_000_000))
    offset = ph_event(2, offset=60_000)
    del offset["timestamp"]
    body = {"batch": [skewed], "sent_at": format_rfc3339_us(now_us + ahead_us)}
    assert (await client.post("/batch/", json=body)).status == 200
    assert (await client.post("/e/", json=[offset])).status == 200
    after_us = time.time_ns() // 1000
    times = {event["data"]["distinct_id"]: parse_rfc3339_us(event["timestamp"]) for event in await stored(client, app)}
    assert now_us - 3_000_000 - 1000 <= times["user-1"] <= after_us - 3_000_000 + 1000
    assert now_us - 60_000_000 - 1000 <= times["user-2"] <= after_us - 60_000_000 + 1000


async def test_gzip_by_header_or_by_compression_parameter(client: Any, app: web.Application) -> None:
    packed = gzip.compress(orjson.dumps([ph_event(1)]))
    headers = {"Content-Type": "application/json"}
    assert (await client.post("/e/?compression=gzip-js", data=packed, headers=headers)).status == 200
    gzip_header = {**headers, "Content-Encoding": "gzip"}
    packed = gzip.compress(orjson.dumps({"batch": [ph_event(2)], "api_key": API_KEY}))
    assert (await client.post("/batch/", data=packed, headers=gzip_header)).status == 200
    # posthog-js also gzips without a word (no parameter, no header): gzip's magic bytes say it.
    packed = gzip.compress(orjson.dumps([ph_event(3)]))
    assert (await client.post("/e/", data=packed, headers=headers)).status == 200
    assert len(await stored(client, app)) == 3
    response = await client.post("/e/?compression=gzip-js", data=b"not gzip", headers=headers)
    assert response.status == 400
    assert (await response.json())["field"] == "Content-Encoding"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"event": None}, "event"),
        ({"event": ""}, "event"),
        ({"distinct_id": None}, "distinct_id"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"timestamp": "soon"}, "timestamp"),
        ({"properties": "x"}, "properties"),
    ],
)
async def test_one_bad_event_refuses_the_request_naming_it(
    client: Any, app: web.Application, bad: dict[str, Any], field: str
) -> None:
    response = await client.post("/batch/", json={"batch": [ph_event(0), ph_event(1, **bad)]})
    assert response.status == 400
    body = await response.json()
    assert body["index"] == 1 and body["field"] == field, body
    assert body["detail"] == body["error"]  # what posthog-python reads
    assert spool_count(app) == 0


async def test_the_key_in_the_body_or_the_events(aiohttp_client: Any, make_app: Any) -> None:
    app = make_app(write_keys=(API_KEY,))
    client = await aiohttp_client(app)
    token_in_properties = ph_event(1)
    token_in_properties["properties"]["token"] = API_KEY
    accepted = [
        {"api_key": API_KEY, "batch": [ph_event(2)]},
        {**ph_event(3), "api_key": API_KEY},
        {**ph_event(4), "token": API_KEY},
        [token_in_properties],
    ]
    for body in accepted:
        assert (await client.post("/e/", json=body)).status == 200, body
    for body, status in (([ph_event(5)], 401), ({"api_key": "phc_wrong-wrong-wrong-00", "batch": [ph_event(6)]}, 401)):
        response = await client.post("/e/", json=body)
        assert response.status == status
        assert (await response.json())["type"] == "authentication_error"
    assert spool_count(app) == 4


async def test_browser_forms_need_cors(aiohttp_client: Any, make_app: Any) -> None:
    """posthog-js's bodies other than JSON (a gzip-js Blob as text/plain, a base64 `data=` form)
    are "simple" requests any page could send: taken only with --cors-origin, from its pages."""
    app = make_app(cors_origins=(PAGE,))
    client = await aiohttp_client(app)
    origin = {"Origin": PAGE}
    form = "data=" + quote(base64.b64encode(orjson.dumps([ph_event(1)])).decode())
    response = await client.post(
        "/e/?compression=base64",
        data=form,
        headers={**origin, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 200, await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    plain_form = "data=" + quote(orjson.dumps(ph_event(2)).decode())
    response = await client.post(
        "/e/", data=plain_form, headers={**origin, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 200, await response.text()
    packed = gzip.compress(orjson.dumps([ph_event(3)]))
    response = await client.post(
        "/e/?compression=gzip-js&_=1700000000000", data=packed, headers={**origin, "Content-Type": "text/plain"}
    )
    assert response.status == 200, await response.text()
    assert len(await stored(client, app)) == 3


async def test_without_cors_a_form_body_is_refused(client: Any, app: web.Application) -> None:
    form = "data=" + quote(orjson.dumps([ph_event(1)]).decode())
    response = await client.post("/e/", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 415
    assert spool_count(app) == 0
