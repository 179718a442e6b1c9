"""Retention and erasure: old events go by themselves, erased events go for good."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from tests.helpers import app_flush, eventually_async, held_write_lock, http_json, store_count


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
    import structlog
    from structlog.testing import capture_logs

    await client.post("/events", json=[user_event(4242)])
    await app_flush(app)
    # The erasure is audited on the request's own line, from the context its handler bound.
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await client.delete("/events", params={"where": "data.user_id:4242"})
    (line,) = [log for log in logs if log["event"] == "request" and log["method"] == "DELETE"]
    assert line["events_deleted"] == 1 and line["where_properties"] == ["user_id"]
    assert "4242" not in repr(logs)


async def test_retention_deletes_old_events_in_the_background(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    app = make_app(flush_period_s=0.05, retention_s=86_400)
    client = await aiohttp_client(app)
    old = [user_event(1, timestamp="2020-01-01T00:00:00Z") for _ in range(5_000)]
    new = [user_event(2) for _ in range(10)]
    assert (await client.post("/events", json=old + new)).status == 200

    async def only_the_new_left() -> bool:
        return (await (await client.get("/view")).json())["total"] == 10

    await eventually_async(only_the_new_left, what="/view holding only the 10 recent events")


def test_erasure_through_the_writer_process(server_factory: Any) -> None:
    server = server_factory(flush="50ms").start()
    http_json("POST", server.url + "/events", [user_event(7) for _ in range(12)] + [user_event(8)])
    server.wait_drained()
    status, body = http_json("DELETE", server.url + "/events?where=" + quote("data.user_id:7"))
    assert (status, body) == (200, {"deleted": 12})
    assert len(server.stored_ids()) == 1


def erase_where(url: str, where: str) -> tuple[int, dict[str, str], Any]:
    """DELETE /events?where=…; (status, headers, JSON body). Generous timeout: a busy store is
    waited for (the busy timeout) before the answer."""
    request = urllib.request.Request(f"{url}/events?where={quote(where)}", method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_an_erasure_that_cannot_drain_the_spool_first_erases_nothing(server_factory: Any) -> None:
    server = server_factory(flush="1h").start()  # the writer drains only when asked
    stored = [user_event(5) for _ in range(3)]
    other = user_event(6)
    assert http_json("POST", server.url + "/events", [*stored, other])[0] == 200
    # An erasure that matches nothing still drains the spool: these four are now in the store.
    assert erase_where(server.url, "data.user_id:0")[::2] == (200, {"deleted": 0})
    spooled = [user_event(5) for _ in range(2)]
    assert http_json("POST", server.url + "/events", spooled)[0] == 200

    with held_write_lock(server.db_path):
        status, headers, body = erase_where(server.url, "data.user_id:5")
    assert status == 503, body
    assert int(headers["Retry-After"]) > 0
    assert body["deleted"] == 0 and "retry" in body["error"]

    # Nothing was erased (neither the stored three nor, later, the two that were spooled):
    # the retry finds all five.
    assert erase_where(server.url, "data.user_id:5")[::2] == (200, {"deleted": 5})
    assert server.stop() == 0
    restarted = server_factory(server.db_path, flush="50ms").start()
    assert http_json("POST", restarted.url + "/events", [*stored, *spooled])[0] == 200  # a replay
    restarted.wait_drained()
    assert restarted.stored_ids() == [other["id"]]


def test_an_erasure_on_a_busy_store_erases_nothing(server_factory: Any) -> None:
    server = server_factory(flush="50ms").start()
    assert http_json("POST", server.url + "/events", [user_event(9) for _ in range(4)])[0] == 200
    server.wait_drained()
    with held_write_lock(server.db_path):
        status, headers, body = erase_where(server.url, "data.user_id:9")
        assert status == 503, body
        assert int(headers["Retry-After"]) > 0 and body["deleted"] == 0
        assert len(server.stored_ids()) == 4  # reads go on meanwhile
    assert erase_where(server.url, "data.user_id:9")[::2] == (200, {"deleted": 4})
    assert server.stored_ids() == []


def test_retention_flag() -> None:
    from tlytics.cli import parse_settings

    assert parse_settings(["--retention", "90d"], {})[0].retention_s == 90 * 86_400
    assert parse_settings([], {"TLYTICS_RETENTION": "2w"})[0].retention_s == 14 * 86_400
    assert parse_settings([], {})[0].retention_s is None
