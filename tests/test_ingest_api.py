"""The HTTP contract of each endpoint, against the real app on a loopback socket."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from tests.helpers import app_flush, spool_count, store_count


def ev(key: str = "page_view", **fields: Any) -> dict[str, Any]:
    return {"key": key, **fields}


async def test_post_events_acknowledges_and_spools_before_store(client: Any, app: web.Application) -> None:
    response = await client.post("/events", json=[ev(data={"user_id": "1"}), ev("signup")])
    assert response.status == 200
    assert await response.json() == {"message": "Successfully queued 2 events", "count": 2}
    # The 200 means the batch is in the spool; the writer has not run yet (flush period 1h).
    assert spool_count(app) == 1
    assert store_count(app) == 0
    await app_flush(app)
    assert spool_count(app) == 0
    assert store_count(app) == 2


async def test_post_batch_accepts_events_object(client: Any, app: web.Application) -> None:
    response = await client.post("/batch", json={"events": [ev(), ev(), ev()]})
    assert response.status == 200
    assert await response.json() == {"message": "Successfully queued 3 events", "count": 3}
    await app_flush(app)
    assert store_count(app) == 3


async def test_empty_batch_is_accepted_and_spools_nothing(client: Any, app: web.Application) -> None:
    response = await client.post("/events", json=[])
    assert response.status == 200
    assert (await response.json())["count"] == 0
    assert spool_count(app) == 0


async def test_health_reports_port_and_figures(client: Any, app: web.Application) -> None:
    await client.post("/events", json=[ev(), ev()])
    response = await client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "healthy"
    assert body["port"] == 8081
    assert body["spool_entries"] == 1
    assert body["stored_events"] == 0
    await app_flush(app)
    body = await (await client.get("/health")).json()
    assert body["spool_entries"] == 0
    assert body["stored_events"] == 2


async def test_view_returns_whole_events_with_defaults(client: Any, app: web.Application) -> None:
    event_id = str(uuid.uuid4())
    await client.post(
        "/events",
        json=[ev("signup", id=event_id, timestamp="2025-08-25T12:00:00+02:00", data={"n": [1, {"x": None}]})],
    )
    await app_flush(app)
    body = await (await client.get("/view")).json()
    assert body["total"] == 1
    assert body["page"] == 1
    assert body["page_size"] == 10
    assert body["total_pages"] == 1
    (event,) = body["events"]
    assert event["id"] == event_id
    assert event["key"] == "signup"
    assert event["timestamp"] == "2025-08-25T10:00:00Z"  # stored in UTC
    assert event["data"] == {"n": [1, {"x": None}]}
    assert event["received_at"].endswith("Z")


async def test_server_assigns_uuid7_and_now_when_absent(client: Any, app: web.Application) -> None:
    await client.post("/events", json=[ev()])
    await app_flush(app)
    (event,) = (await (await client.get("/view")).json())["events"]
    assert uuid.UUID(event["id"]).version == 7
    assert event["timestamp"] == event["received_at"]
    assert event["data"] == {}


async def test_view_is_newest_first_by_timestamp_then_id(client: Any, app: web.Application) -> None:
    same_time = "2025-01-01T00:00:00Z"
    low_id = "00000000-0000-7000-8000-000000000001"
    high_id = "00000000-0000-7000-8000-000000000002"
    await client.post(
        "/events",
        json=[
            ev("middle", timestamp="2025-06-01T00:00:00Z"),
            ev("oldest-low-id", id=low_id, timestamp=same_time),
            ev("newest", timestamp="2026-01-01T00:00:00.5Z"),
            ev("oldest-high-id", id=high_id, timestamp=same_time),
        ],
    )
    await app_flush(app)
    body = await (await client.get("/view")).json()
    assert [e["key"] for e in body["events"]] == ["newest", "middle", "oldest-high-id", "oldest-low-id"]
    assert body["events"][0]["timestamp"] == "2026-01-01T00:00:00.5Z"


async def test_view_pagination_edges(client: Any, app: web.Application) -> None:
    empty = await (await client.get("/view")).json()
    assert empty == {
        "events": [],
        "total": 0,
        "page": 1,
        "page_size": 10,
        "total_pages": 0,
        "next_cursor": None,
        "order": "desc",
    }

    events = [ev(f"k{i:02d}", timestamp=f"2025-01-01T00:00:{i:02d}Z") for i in range(25)]
    await client.post("/events", json=events)
    await app_flush(app)

    last = await (await client.get("/view", params={"page": 3})).json()
    assert last["total"] == 25 and last["total_pages"] == 3
    assert [e["key"] for e in last["events"]] == ["k04", "k03", "k02", "k01", "k00"]

    past_end = await (await client.get("/view", params={"page": 4})).json()
    assert past_end["events"] == [] and past_end["page"] == 4 and past_end["total"] == 25

    for bad in ("abc", "0", "-5", ""):
        body = await (await client.get("/view", params={"page_size": bad})).json()
        assert body["page_size"] == 10, bad
        assert len(body["events"]) == 10

    for bad in ("abc", "0", "-1"):
        body = await (await client.get("/view", params={"page": bad})).json()
        assert body["page"] == 1, bad

    capped = await (await client.get("/view", params={"page_size": 5000})).json()
    assert capped["page_size"] == 1000
    assert capped["total_pages"] == 1
    assert len(capped["events"]) == 25


async def test_view_page_size_above_max_is_capped_with_many_events(client: Any, app: web.Application) -> None:
    for _ in range(3):
        await client.post("/events", json=[ev() for _ in range(500)])
    await app_flush(app)
    body = await (await client.get("/view", params={"page_size": 1001})).json()
    assert body["page_size"] == 1000
    assert len(body["events"]) == 1000
    assert body["total_pages"] == 2


async def test_duplicate_ids_are_stored_once(client: Any, app: web.Application) -> None:
    event_id = str(uuid.uuid4())
    other_id = str(uuid.uuid4())
    # Twice inside one request, and again in a later request.
    first = await client.post("/events", json=[ev(id=event_id), ev(id=event_id), ev(id=other_id)])
    assert first.status == 200
    second = await client.post("/batch", json={"events": [ev("changed", id=event_id)]})
    assert second.status == 200
    await app_flush(app)
    body = await (await client.get("/view")).json()
    assert body["total"] == 2
    assert sorted(e["id"] for e in body["events"]) == sorted([event_id, other_id])
    # The first stored version wins; the later duplicate is ignored, not an update.
    assert {e["key"] for e in body["events"]} == {"page_view"}


async def test_duplicate_id_differing_in_case_is_the_same_event(client: Any, app: web.Application) -> None:
    event_id = str(uuid.uuid4())
    await client.post("/events", json=[ev(id=event_id), ev(id=event_id.upper())])
    await app_flush(app)
    body = await (await client.get("/view")).json()
    assert body["total"] == 1
    assert body["events"][0]["id"] == event_id


async def test_unknown_path_and_wrong_method_are_json(client: Any) -> None:
    missing = await client.get("/nope")
    assert missing.status == 404
    assert "no such endpoint" in (await missing.json())["error"]
    wrong = await client.get("/events")
    assert wrong.status == 405
    assert "POST" in wrong.headers["Allow"]
    assert "not allowed" in (await wrong.json())["error"]


async def test_spool_failure_is_503_with_retry_after_and_accepts_nothing(
    client: Any, app: web.Application, monkeypatch: Any
) -> None:
    from tlytics.errors import SpoolError
    from tlytics.ingest.state import SPOOL

    def broken(values: Any) -> Any:
        raise SpoolError("disk I/O error (injected)")

    monkeypatch.setattr(app[SPOOL], "append_many", broken)
    response = await client.post("/events", json=[ev(), ev()])
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert "retry later" in (await response.json())["error"]
    monkeypatch.undo()
    await app_flush(app)
    assert store_count(app) == 0
    # It recovers by itself once the spool works again.
    assert (await client.post("/events", json=[ev()])).status == 200


async def test_lookup_says_which_ids_are_stored(client: Any, app: web.Application) -> None:
    stored_id, unknown_id = str(uuid.uuid4()), str(uuid.uuid4())
    await client.post("/events", json=[ev(id=stored_id)])
    await app_flush(app)
    response = await client.post("/lookup", json={"ids": [unknown_id, stored_id.upper()]})
    assert response.status == 200
    assert await response.json() == {"present": [stored_id]}
    bad = await client.post("/lookup", json={"ids": [stored_id, "nope"]})
    assert bad.status == 400
    assert (await bad.json())["index"] == 1
    assert (await client.post("/lookup", json={"ids": "x"})).status == 400
