"""Retention and erasure: old events go by themselves, erased events go for good."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from tests.conftest import app_flush, http_json, store_count
from tlytics.ingest import Settings, create_app


def user_event(user: int, **extra: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "key": "page_view", "data": {"user_id": user}, **extra}


async def test_erasure_deletes_matching_events_for_good(client: Any, app: web.Application) -> None:
    erased_user = [user_event(1) for _ in range(30)]
    kept = [user_event(2) for _ in range(20)]
    await client.post("/events", json=erased_user + kept)
    await app_flush(app)
    late = user_event(1)
    await client.post("/events", json=[late])  # still in the spool when the erasure comes

    response = await client.delete("/events", params={"where": "data.user_id:1"})
    assert response.status == 200
    assert await response.json() == {"deleted": 31}
    body = await (await client.get("/view", params={"page_size": 100})).json()
    assert body["total"] == 20 and {e["data"]["user_id"] for e in body["events"]} == {2}

    # A retry or replay of an erased event is acknowledged (it is a duplicate) but never stored again.
    again = await client.post("/events", json=[erased_user[0], late])
    assert again.status == 200
    await app_flush(app)
    assert store_count(app) == 20


async def test_erasure_needs_a_filter(client: Any, app: web.Application) -> None:
    await client.post("/events", json=[user_event(1)])
    await app_flush(app)
    response = await client.delete("/events")
    assert response.status == 400
    assert (await response.json())["field"] == "where"
    assert store_count(app) == 1


async def test_erasure_is_logged_without_the_values(client: Any, app: web.Application) -> None:
    from structlog.testing import capture_logs

    await client.post("/events", json=[user_event(4242)])
    await app_flush(app)
    with capture_logs() as logs:
        await client.delete("/events", params={"where": "data.user_id:4242"})
    (line,) = [log for log in logs if log["event"] == "events_erased"]
    assert line["deleted"] == 1 and line["where_properties"] == ["user_id"]
    assert "4242" not in repr(line)


async def test_retention_deletes_old_events_in_the_background(aiohttp_client: Any, tmp_path: Path) -> None:
    app = create_app(Settings(db_path=tmp_path / "a.db", flush_period_s=0.05, retention_s=86_400, writer_process=False))
    client = await aiohttp_client(app)
    old = [user_event(1, timestamp="2020-01-01T00:00:00Z") for _ in range(5_000)]
    new = [user_event(2) for _ in range(10)]
    assert (await client.post("/events", json=old + new)).status == 200
    deadline = time.monotonic() + 20
    total = -1
    while time.monotonic() < deadline:
        total = (await (await client.get("/view")).json())["total"]
        if total == 10:
            break
        await asyncio.sleep(0.05)
    assert total == 10


def test_erasure_through_the_writer_process(server_factory: Any) -> None:
    server = server_factory(flush="50ms").start()
    http_json("POST", server.url + "/events", [user_event(7) for _ in range(12)] + [user_event(8)])
    server.wait_drained()
    status, body = http_json("DELETE", server.url + "/events?where=" + quote("data.user_id:7"))
    assert (status, body) == (200, {"deleted": 12})
    assert len(server.stored_ids()) == 1


def test_retention_flag() -> None:
    from tlytics.cli import parse_settings

    assert parse_settings(["--retention", "90d"], {})[0].retention_s == 90 * 86_400
    assert parse_settings([], {"TLYTICS_RETENTION": "2w"})[0].retention_s == 14 * 86_400
    assert parse_settings([], {})[0].retention_s is None
