"""Web pages as senders (--cors-origin): preflights answered on the write routes for allowed
origins only, CORS headers on their answers, sendBeacon's text/plain bodies taken, another
site's page refused, and no key but a write key usable from a page. Off by default: nothing
changes (no OPTIONS route, text/plain refused). And /t.js, the page script, is served."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.helpers import app_flush, spool_count, store_count
from tlytics.origins import cors_origin

PAGE = "https://shop.example"
OTHER = "https://evil.example"
WRITE_KEY = "cors-write-key-000001"
READ_KEY = "cors-read-key-0000001"
WRITE_ROUTES = ("/events", "/batch", "/v1/batch", "/v1/track", "/e/", "/capture/")


@pytest.fixture
async def paged(aiohttp_client: Any, make_app: Any) -> tuple[Any, web.Application]:
    app = make_app(cors_origins=(PAGE,), write_keys=(WRITE_KEY,), read_keys=(READ_KEY,))
    return await aiohttp_client(app), app


def preflight_headers(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type, authorization",
    }


@pytest.mark.parametrize("path", WRITE_ROUTES)
async def test_preflight_of_an_allowed_page_is_answered(paged: tuple[Any, web.Application], path: str) -> None:
    client, _ = paged
    response = await client.options(path, headers=preflight_headers(PAGE))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    assert "Origin" in response.headers.getall("Vary")


async def test_preflight_of_another_site_or_method_is_refused(paged: tuple[Any, web.Application]) -> None:
    client, _ = paged
    response = await client.options("/events", headers=preflight_headers(OTHER))
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert (await client.options("/events", headers=preflight_headers(PAGE, "DELETE"))).status == 403
    assert (await client.options("/events")).status == 400  # not a preflight at all
    # Reading routes have no preflight: a page can never send them a key.
    for path in ("/view", "/stats", "/lookup", "/export"):
        response = await client.options(path, headers=preflight_headers(PAGE, "GET"))
        assert response.status == 405, path
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_beacon_body_is_taken_from_an_allowed_page(paged: tuple[Any, web.Application]) -> None:
    client, app = paged
    headers = {"Origin": PAGE, "Content-Type": "text/plain;charset=UTF-8", "Authorization": f"Bearer {WRITE_KEY}"}
    response = await client.post("/events", data=orjson.dumps([{"key": "beacon"}]), headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    segment = {"batch": [{"type": "page", "userId": "u", "messageId": "m1"}], "writeKey": WRITE_KEY}
    response = await client.post("/v1/batch", data=orjson.dumps(segment), headers={**headers, "Authorization": ""})
    assert response.status == 200, await response.text()
    await app_flush(app)
    assert store_count(app) == 2


async def test_errors_to_an_allowed_page_carry_cors_headers(paged: tuple[Any, web.Application]) -> None:
    client, _ = paged
    response = await client.post("/events", json=[{"key": ""}], headers={"Origin": PAGE})
    assert response.status == 401  # no key: the page can read why
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize("path", WRITE_ROUTES)
async def test_a_page_of_another_site_is_refused(paged: tuple[Any, web.Application], path: str) -> None:
    client, app = paged
    headers = {"Origin": OTHER, "Content-Type": "text/plain", "Authorization": f"Bearer {WRITE_KEY}"}
    response = await client.post(path, data=b"[]", headers=headers)
    assert response.status == 403
    assert (await response.json())["field"] == "Origin"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert spool_count(app) == 0


async def test_a_reading_key_is_refused_from_any_page(paged: tuple[Any, web.Application]) -> None:
    client, _ = paged
    for origin in (PAGE, OTHER):
        response = await client.get("/view", headers={"Origin": origin, "Authorization": f"Bearer {READ_KEY}"})
        assert response.status == 403, origin
        assert "public" in (await response.json())["error"]
    # The dashboard, served by the server itself, keeps its read key working.
    own = f"http://{client.server.host}:{client.server.port}"
    response = await client.post(
        "/lookup", json={"ids": []}, headers={"Origin": own, "Authorization": f"Bearer {READ_KEY}"}
    )
    assert response.status != 403
    # And without an Origin (a script, curl): as ever.
    assert (await client.get("/view", headers={"Authorization": f"Bearer {READ_KEY}"})).status == 200


async def test_any_origin(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(cors_origins=("*",)))
    response = await client.options("/v1/track", headers=preflight_headers(OTHER))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_off_by_default_nothing_changes(client: Any, app: web.Application) -> None:
    response = await client.options("/events", headers=preflight_headers(PAGE))
    assert response.status == 405
    response = await client.post("/events", data=b"[]", headers={"Origin": PAGE, "Content-Type": "text/plain"})
    assert response.status == 415
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("value", ["https://shop.example/", "shop.example", "https://Shop.example", "https://a b"])
def test_an_origin_that_is_not_one_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        cors_origin(value)


async def test_the_page_script_is_served(client: Any) -> None:
    response = await client.get("/t.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    script = await response.text()
    assert len(script.encode()) < 4096  # a few KB
    assert "sendBeacon" in script and "doNotTrack" in script and "pushState" in script
    assert "cookie" not in script.lower().replace("no cookies", "")
