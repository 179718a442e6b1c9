"""What is particular to the SQLite store: its file (WAL, schema version), its migrations of
stores earlier versions wrote, its read-only readers, and APSW errors as StoreError. What every
backend must do is in test_store_contract.py."""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from tlytics.errors import StoreError
from tlytics.store import EventFilter, SQLiteReader, SQLiteStore, SQLiteWriter
from tlytics.store.sqlite import SCHEMA_VERSION


def row(n: int, ts: int, key: str = "k") -> tuple[bytes, str, int, int, str]:
    return (uuid.UUID(int=n).bytes, key, ts, ts, f'{{"n": {n}}}')


def test_open_migrates_and_uses_wal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    assert store.schema_version == SCHEMA_VERSION >= 1
    store.close()
    connection = apsw.Connection(str(tmp_path / "a.db"))
    assert connection.pragma("journal_mode") == "wal"
    assert connection.pragma("user_version") == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    connection = apsw.Connection(str(tmp_path / "a.db"))
    connection.pragma("user_version", SCHEMA_VERSION + 1)
    connection.close()
    with pytest.raises(StoreError, match="newer than this Tlytics"):
        SQLiteStore(tmp_path / "a.db")


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "dir.db")


def test_a_reader_refuses_a_store_not_migrated_yet(tmp_path: Path) -> None:
    connection = apsw.Connection(str(tmp_path / "a.db"))
    connection.pragma("user_version", SCHEMA_VERSION - 1)
    connection.close()
    reader = SQLiteReader(tmp_path / "a.db")
    try:
        with pytest.raises(StoreError, match="writer side migrates it"):
            reader.count()
    finally:
        reader.close()


def test_a_reader_cannot_write(tmp_path: Path) -> None:
    SQLiteWriter(tmp_path / "a.db").close()
    reader = SQLiteReader(tmp_path / "a.db")
    try:
        reader.count()
        connection = reader._read_connection()
        with pytest.raises(apsw.ReadOnlyError):
            connection.execute("DELETE FROM events")
    finally:
        reader.close()


def test_store_errors_say_what_failed_and_keep_the_cause(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    with apsw.Connection(str(tmp_path / "a.db")) as connection:
        connection.execute("DROP TABLE key_stats")
    with pytest.raises(StoreError, match=r"^keys read failed: .*no such table: key_stats") as raised:
        store.keys_summary()
    assert isinstance(raised.value.__cause__, apsw.SQLError)
    store.close()
    with pytest.raises(StoreError, match=r"^insert of 1 events failed: ") as raised:
        store.insert([row(1, 10)])
    assert isinstance(raised.value.__cause__, apsw.Error)
    with pytest.raises(StoreError, match="is closed"):
        store.count()


def _store_as_version_3_left_it(path: Path, rows: list[tuple[bytes, str, int, int, str]]) -> None:
    """A store written by the version before timestamps were range-checked and data made
    canonical: schema 3, with whatever rows that version accepted."""
    from tlytics.store.sqlite.schema import MIGRATIONS
    from tlytics.store.sqlite.writes import KEY_STATS_NEW_ROWS, ROLL_UP_NEW_ROWS

    connection = apsw.Connection(str(path))
    with connection:
        for number, script in enumerate(MIGRATIONS[:3], start=1):
            assert isinstance(script, str)
            connection.execute(script)
            connection.pragma("user_version", number)
        connection.executemany("INSERT INTO events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?)", rows)
        connection.execute("UPDATE counters SET value = ? WHERE name = 'events'", (len(rows),))
        connection.execute(ROLL_UP_NEW_ROWS, (0,))
        connection.execute(KEY_STATS_NEW_ROWS, (0,))
    connection.close()


async def test_a_store_holding_unreadable_rows_is_repaired_and_every_read_answers(
    tmp_path: Path, aiohttp_client: Any, make_app: Callable[..., Any]
) -> None:
    import orjson

    year_10000 = 253_402_300_800_000_000 + 3_600_000_000  # what 9999-12-31T23:59:59-12:00 became
    year_999 = -30_628_713_600_000_000
    ok = 1_735_689_600_000_000  # 2025-01-01
    path = tmp_path / "analytics.db"
    _store_as_version_3_left_it(
        path,
        [
            (uuid.UUID(int=1).bytes, "late", year_10000, ok, '{"a": 1}'),
            (uuid.UUID(int=2).bytes, "late", ok, ok, '{\n  "pretty": [1, 2],\n  "s": "two  spaces"\n}'),
            (uuid.UUID(int=3).bytes, "old", year_999, ok, "{}"),
            (uuid.UUID(int=4).bytes, "early", -62_135_596_800_000_001, ok, "{}"),
        ],
    )
    client = await aiohttp_client(make_app(db_path=path))  # the store prepared above
    for endpoint in (
        "/view",
        "/keys",
        "/export?format=ndjson",
        "/export?format=csv",
        "/stats?interval=month&since=0001-01-01T00:00:00Z&until=0003-01-01T00:00:00Z",
    ):
        response = await client.get(endpoint)
        assert response.status == 200, (endpoint, await response.text())
    view = await (await client.get("/view")).json()
    assert view["total"] == 2
    assert [(e["key"], e["timestamp"], e["data"]) for e in view["events"]] == [
        ("late", "2025-01-01T00:00:00Z", {"pretty": [1, 2], "s": "two  spaces"}),
        ("old", "0999-06-01T00:00:00Z", {}),
    ]
    export = await (await client.get("/export?format=ndjson")).read()
    lines = export.splitlines()
    assert len(lines) == 2 and b'"data":{"pretty":[1,2],"s":"two  spaces"}' in export
    keys = {k["key"]: k for k in (await (await client.get("/keys")).json())["keys"]}
    assert keys["late"]["count"] == 1 and keys["late"]["last_seen"] == "2025-01-01T00:00:00Z"
    assert "early" not in keys
    for line in lines:  # what the server gives out, it takes back
        event = orjson.loads(line)
        del event["received_at"]
        assert (await client.post("/events", json=[event])).status == 200
    connection = apsw.Connection(str(path))
    try:
        kept = connection.execute("SELECT key, ts FROM unreadable_events ORDER BY seq").fetchall()
    finally:
        connection.close()
    assert kept == [("late", year_10000), ("early", -62_135_596_800_000_001)]


def test_the_writer_keeps_erased_ids_in_the_store_not_in_memory(tmp_path: Path) -> None:
    # Issue 19, item 12: every erased id was held in a set (~80 bytes each), read whole at
    # every start; 200,000 of them took ~16 MB before the first insert.
    path = tmp_path / "erased.db"
    SQLiteWriter(path).close()
    connection = apsw.Connection(str(path))
    with connection:
        connection.executemany(
            "INSERT INTO erased_ids (id) VALUES (?)", ((uuid.UUID(int=n).bytes,) for n in range(1, 200_001))
        )
    connection.close()
    tracemalloc.start()
    try:
        writer = SQLiteWriter(path)
        # Erased ids (old and new) are still refused, a fresh one stored.
        assert writer.insert([row(7, 1), row(150_000, 2), row(300_000, 3)]) == 1
        assert writer.delete_matching(EventFilter(), max_rows=10, remember_ids=True) == 1
        assert writer.insert([row(300_000, 3), row(300_001, 4)]) == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    writer.close()
    assert peak < 2_000_000, f"{peak} bytes traced while opening, inserting and erasing"
