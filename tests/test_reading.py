"""Reading the data: /view filters, keyset cursors and order; /export as NDJSON and CSV."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.conftest import app_flush


def event(n: int, key: str = "page_view", **data: Any) -> dict[str, Any]:
    return {"id": str(uuid.UUID(int=n + 1)), "key": key, "timestamp": f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z", "data": data}


@pytest.fixture
async def filled(client: Any, app: web.Application) -> Any:
    events = [event(n, "signup" if n % 5 == 0 else "page_view", user_id=n % 3, name=f"u{n % 3}") for n in range(120)]
    assert (await client.post("/events", json=events)).status == 200
    await app_flush(app)
    return client


async def get(client: Any, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_cursor_walks_every_event_once_in_order(filled: Any) -> None:
    seen: list[str] = []
    body = await get(filled, "/view", page_size=7)
    for _ in range(100):
        seen += [e["key"] + e["timestamp"] for e in body["events"]]
        if body["next_cursor"] is None:
            break
        body = await get(filled, "/view", page_size=7, cursor=body["next_cursor"])
    assert len(seen) == len(set(seen)) == 120
    timestamps = [s[-20:] for s in seen]
    assert timestamps == sorted(timestamps, reverse=True)


async def test_ascending_order_and_cursor(filled: Any) -> None:
    first = await get(filled, "/view", order="asc", page_size=50)
    assert first["order"] == "asc"
    assert first["events"][0]["timestamp"] == "2025-01-01T00:00:00Z"
    second = await get(filled, "/view", order="asc", page_size=50, cursor=first["next_cursor"])
    assert second["events"][0]["timestamp"] == "2025-01-01T00:00:50Z"
    last = await get(filled, "/view", order="asc", page_size=50, cursor=second["next_cursor"])
    assert len(last["events"]) == 20 and last["next_cursor"] is None


async def test_filters_combine_and_total_counts_matches(filled: Any) -> None:
    signups = await get(filled, "/view", key="signup", page_size=100)
    assert signups["total"] == 24 and {e["key"] for e in signups["events"]} == {"signup"}
    window = await get(filled, "/view", since="2025-01-01T00:01:00Z", until="2025-01-01T00:01:10Z", page_size=100)
    assert window["total"] == 10
    assert min(e["timestamp"] for e in window["events"]) == "2025-01-01T00:01:00Z"
    numeric = await get(filled, "/view", where="data.user_id:1", page_size=100)
    assert numeric["total"] == 40 and all(e["data"]["user_id"] == 1 for e in numeric["events"])
    text = await get(filled, "/view", where="data.name:u2", page_size=100)
    assert text["total"] == 40
    both = await filled.get("/view", params=[("where", "data.user_id:1"), ("key", "signup"), ("key", "nothing")])
    body = await both.json()
    assert body["total"] == 8 and all(e["key"] == "signup" and e["data"]["user_id"] == 1 for e in body["events"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-01-01"}, "until"),
        ({"where": "user_id=1"}, "where"),
        ({"order": "sideways"}, "order"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"key": ""}, "key"),
    ],
)
async def test_bad_read_parameters_are_400_with_field(client: Any, params: dict[str, str], field: str) -> None:
    for path in ("/view", "/export"):
        response = await client.get(path, params=params)
        assert response.status == 400, path
        assert (await response.json())["field"] == field


async def test_export_ndjson_streams_every_matching_event(filled: Any) -> None:
    response = await filled.get("/export", params={"key": "page_view"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = (await response.read()).splitlines()
    events = [orjson.loads(line) for line in lines]
    assert len(events) == 96 and {e["key"] for e in events} == {"page_view"}
    assert set(events[0]) == {"id", "key", "timestamp", "data", "received_at"}


async def test_export_csv_columns_and_json_data(filled: Any) -> None:
    response = await filled.get("/export", params={"format": "csv", "order": "asc", "where": "data.user_id:0"})
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert rows[0] == ["id", "key", "timestamp", "received_at", "data"]
    assert len(rows) == 41
    assert rows[1][2] == "2025-01-01T00:00:00Z"
    assert orjson.loads(rows[1][4])["user_id"] == 0


async def test_export_of_more_than_one_chunk(client: Any, app: web.Application) -> None:
    from tlytics.ingest import handlers

    for start in range(0, 12_000, 4_000):
        await client.post("/events", json=[{"key": "bulk"}] * 4_000)
    await app_flush(app)
    assert handlers.EXPORT_CHUNK < 12_000
    body = await (await client.get("/export")).read()
    ids = [orjson.loads(line)["id"] for line in body.splitlines()]
    assert len(ids) == len(set(ids)) == 12_000
