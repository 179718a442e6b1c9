"""Reading the data: /view filters, keyset cursors and order; /export as NDJSON and CSV."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.helpers import app_flush, event


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
    from tlytics.ingest import export

    for _ in range(0, 12_000, 4_000):
        await client.post("/events", json=[{"key": "bulk"}] * 4_000)
    await app_flush(app)
    assert export.EXPORT_CHUNK < 12_000
    body = await (await client.get("/export")).read()
    ids = [orjson.loads(line)["id"] for line in body.splitlines()]
    assert len(ids) == len(set(ids)) == 12_000


# Typed filters: what a JSON reader expects, the same in /view, /export, /stats and erasure.
TYPED = {
    "int_one": {"v": 1},
    "real_one": {"v": 1.0},
    "true": {"v": True},
    "false": {"v": False},
    "string_one": {"v": "1"},
    "string_true": {"v": "true"},
    "null": {"v": None},
    "missing": {},
    "zero": {"v": 0},
    "string_quote": {"v": '"1"'},
    "big": {"v": 99999999999999999999999},
}


@pytest.fixture
async def typed(client: Any, app: web.Application) -> Any:
    events = [
        {"id": str(uuid.UUID(int=n + 1)), "key": name, "data": data} for n, (name, data) in enumerate(TYPED.items())
    ]
    assert (await client.post("/events", json=events)).status == 200
    await app_flush(app)
    return client


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", {"int_one", "real_one", "string_one"}),  # a number, and its string form; never true
        ("1.0", {"int_one", "real_one"}),  # as a number; no stored string is spelt "1.0"
        ("1e0", {"int_one", "real_one"}),
        ("true", {"true"}),
        ("false", {"false"}),  # not 0
        ("null", {"null"}),  # not a missing property
        ("0", {"zero"}),  # not false
        ('"1"', {"string_one"}),  # quoted: only the string
        ('"true"', {"string_true"}),
        ('"\\"1\\""', {"string_quote"}),  # JSON string syntax inside the quotes
        ("99999999999999999999999", {"big"}),  # beyond 64 bits: compared by value, no overflow
        ("01", set()),  # not JSON's spelling of a number: a string, and none is "01"
        ("", set()),
    ],
)
async def test_where_matches_by_json_type(typed: Any, value: str, expected: set[str]) -> None:
    body = await get(typed, "/view", where=f"data.v:{value}", page_size=100)
    assert {e["key"] for e in body["events"]} == expected
    assert body["total"] == len(expected)
    export = await typed.get("/export", params={"where": f"data.v:{value}"})
    assert {orjson.loads(line)["key"] for line in (await export.read()).splitlines()} == expected
    stats = await get(typed, "/stats", where=f"data.v:{value}", interval="month")
    assert sum(b["count"] for b in stats["buckets"]) == len(expected)


@pytest.mark.parametrize("value", ['"1', '"a"b"', '"1" ', '"\\x"'])
async def test_a_quoted_value_must_be_one_json_string(client: Any, value: str) -> None:
    for path in ("/view", "/export", "/stats"):
        response = await client.get(path, params={"where": f"data.v:{value}"})
        assert response.status == 400, path
        assert (await response.json())["field"] == "where"


async def test_erasing_flag_1_leaves_flag_true_alone(typed: Any) -> None:
    response = await typed.delete("/events", params={"where": "data.v:1"})
    assert response.status == 200
    assert (await response.json())["deleted"] == 3
    left = {e["key"] for e in (await get(typed, "/view", page_size=100))["events"]}
    assert left == set(TYPED) - {"int_one", "real_one", "string_one"}
    assert "true" in left


# Numbers beyond what the store holds are the client's mistake: 400 naming the field, or an
# answer with a defined meaning; never a 500.
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": str(10**30)}, "page"),
        ({"page": str(2**53)}, "page"),
        ({"cursor": "OTk5OTk5OTk5OTk5OTk5OTk5OTk5Ojk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"}, "cursor"),
    ],
)
async def test_numbers_beyond_64_bits_are_400_with_field(typed: Any, params: dict[str, str], field: str) -> None:
    response = await typed.get("/view", params=params)
    assert response.status == 400, await response.text()
    assert (await response.json())["field"] == field


async def test_huge_numbers_with_a_meaning_answer_200(typed: Any) -> None:
    import base64

    huge = str(10**30)
    assert (await get(typed, "/view", page_size=huge))["page_size"] == 1000  # at most 1000, as documented
    assert (await get(typed, "/view", where=f"data.v:{huge}"))["total"] == 0
    assert (await get(typed, "/view", where="data.v:-" + "9" * 5000))["total"] == 0
    assert (await get(typed, "/view", where="data.v:1e400"))["total"] == 0
    far = await get(typed, "/view", page=str(2**53 - 1), page_size="1000")  # past the end: empty
    assert far["events"] == [] and far["total"] == len(TYPED)
    for cursor_ts in (2**63 - 1, -(2**63)):  # the extremes a cursor may hold
        cursor = base64.urlsafe_b64encode(f"{cursor_ts}:{'00' * 16}".encode()).decode().rstrip("=")
        assert (await typed.get("/view", params={"cursor": cursor})).status == 200
    erase = await typed.delete("/events", params={"where": f"data.v:{huge}"})
    assert erase.status == 200 and (await erase.json())["deleted"] == 0


async def test_export_validates_everything_before_its_200(typed: Any) -> None:
    from tlytics.errors import StoreError
    from tlytics.ingest.state import STORE

    for params in (
        {"cursor": "OTk5OTk5OTk5OTk5OTk5OTk5OTk5Ojk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"},
        {"where": 'data.v:"1'},
    ):
        response = await typed.get("/export", params=params)
        assert response.status == 400
        assert "field" in await response.json()
    # A store that fails on the first read: an honest error, not a 200 with an empty file.
    store = typed.app[STORE]
    real_run = store.run

    def failing_read(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("disk I/O error")

    store.run = failing_read  # every read goes through run(query function, ...)
    try:
        response = await typed.get("/export", params={"format": "csv"})
        assert response.status == 500
        assert "error" in await response.json()
    finally:
        store.run = real_run


@pytest.mark.parametrize(
    # (Keys cannot start with a tab or CR, control characters are refused; those get the prefix too.)
    "key",
    ['=HYPERLINK("http://x")', "+1", "-1+2", "@SUM(A1)", "'quoted", "''", "plain", "a=b"],
)
async def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote(client: Any, app: web.Application, key: str) -> None:
    data = {"s": "=1+1"}
    assert (await client.post("/events", json=[{"key": key, "data": data}])).status == 200
    await app_flush(app)
    rows = list(csv.reader(io.StringIO(await (await client.get("/export", params={"format": "csv"})).text())))
    (row,) = rows[1:]
    dangerous = key[0] in "=+-@\t\r'"
    assert row[1] == ("'" + key if dangerous else key)
    assert (row[1][1:] if dangerous else row[1]) == key  # strip one leading ' to get it back
    assert orjson.loads(row[4]) == data  # data is a JSON object: it starts with {, never escaped
