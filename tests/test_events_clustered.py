"""Migration 8: the events move from a rowid table with two indexes to one b-tree clustered on
(ts, id) plus a unique index on id. A store the previous schema wrote, with real data (erased
ids, a declared property half backfilled, events at the same timestamp), comes back identical;
migrating again changes nothing; a kill -9 in the middle leaves the old store or the new one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import apsw
import orjson

from tests.helpers import eventually
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, SQLiteStore
from tlytics.store.base import Position
from tlytics.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from tlytics.store.sqlite.writes import KEY_STATS_NEW_ROWS, ROLL_UP_NEW_ROWS

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z, µs
ROWS_SQL = "SELECT id, key, ts, received_at, data FROM events ORDER BY ts, id"
EVERYTHING_SQL = {
    "events": ROWS_SQL,
    "counters": "SELECT * FROM counters ORDER BY name",
    "rollup_15m": "SELECT * FROM rollup_15m ORDER BY bucket, key",
    "key_stats": "SELECT * FROM key_stats ORDER BY key",
    "erased_ids": "SELECT * FROM erased_ids ORDER BY id",
    "property_values": "SELECT * FROM property_values ORDER BY property, ts, id",
}


def event_rows(count: int) -> list[tuple[bytes, str, int, int, str]]:
    """Events as the writer stores them: several at one timestamp, some before 1970, data of
    several shapes (unicode, nesting, no amount at all)."""
    rows = []
    for n in range(count):
        data: dict[str, Any] = {"amount": n % 97, "path": f"/p/{n % 13}", "name": "zoë" if n % 5 == 0 else "ann"}
        if n % 11 == 0:
            data = {"nested": {"list": [n, None, True]}}
        ts = T0 + (n // 3) * 1_000_000 if n % 17 else -86_400_000_000 * (n % 7)
        rows.append(
            (uuid.UUID(int=(n * 7919) % (1 << 64) + 1).bytes, f"key_{n % 4}", ts, T0 + n, orjson.dumps(data).decode())
        )
    return rows


def store_as_version_7_left_it(path: Path, rows: list[tuple[bytes, str, int, int, str]]) -> None:
    """A store the previous schema (7) wrote: its events in a rowid table, the rollups kept,
    two ids erased, data.amount declared and backfilled half way (by seq)."""
    connection = apsw.Connection(str(path))
    connection.execute("PRAGMA journal_mode=WAL")
    with connection:
        for number, script in enumerate(MIGRATIONS[:7], start=1):
            if isinstance(script, str):
                connection.execute(script)
            else:
                script(connection)
            connection.pragma("user_version", number)
        connection.executemany("INSERT INTO events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?)", rows)
        connection.execute("UPDATE counters SET value = ? WHERE name = 'events'", (len(rows),))
        connection.execute(ROLL_UP_NEW_ROWS, (0,))
        connection.execute(KEY_STATS_NEW_ROWS, (0,))
        connection.executemany("INSERT INTO erased_ids (id) VALUES (?)", [(b"\x01" * 16,), (b"\x02" * 16,)])
        connection.execute(
            "INSERT INTO declared_properties (path, backfill_from, backfill_to, complete) VALUES ('amount', ?, ?, 0)",
            (len(rows) // 2, len(rows)),
        )
        connection.execute(
            "INSERT INTO property_values (property, ts, id, kind, value) SELECT 1, ts, id,"
            " 1, json_extract(data, '$.amount') FROM events WHERE seq <= ? AND json_type(data, '$.amount') IS NOT NULL",
            (len(rows) // 2,),
        )
    connection.close()


def contents(path: Path) -> dict[str, list[Any]]:
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {name: connection.execute(query).fetchall() for name, query in EVERYTHING_SQL.items()}
    finally:
        connection.close()


def schema_of(path: Path) -> tuple[int, list[Any]]:
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        tables = connection.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()
        return int(connection.pragma("user_version")), tables
    finally:
        connection.close()


def test_a_store_of_the_previous_schema_comes_back_identical(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rows = event_rows(3000)
    store_as_version_7_left_it(path, rows)
    before = contents(path)
    store = SQLiteStore(path)  # migrates; keeps data.amount declared and finishes its backfill
    assert store.wait_backfilled(60)
    assert store.schema_version == SCHEMA_VERSION
    after = contents(path)
    assert after["events"] == before["events"] == sorted(rows, key=lambda row: (row[2], row[0]))
    for table in ("counters", "rollup_15m", "key_stats", "erased_ids"):
        assert after[table] == before[table], table
    # Every event with an amount now has its value (the half the old backfill had not done too).
    assert len(after["property_values"]) == sum(1 for row in rows if '"amount"' in row[4])
    # Reads by id, by time order and cursor, and by the declared property all answer.
    assert store.existing_ids([rows[5][0], b"\x09" * 16]) == {rows[5][0]}
    newest = store.page(1, 10)
    assert newest.total == len(rows) and newest.next_position is not None
    following = store.page(1, 10, after=newest.next_position)
    expected = sorted(rows, key=lambda row: (row[2], row[0]), reverse=True)
    assert [event.id for event in newest.events + following.events] == [
        str(uuid.UUID(bytes=row[0])) for row in expected[:20]
    ]
    amount_over_90 = EventFilter(where=(where_condition("data.amount>90"),))
    assert store.page(1, 1, where=amount_over_90).total == sum(
        1 for row in rows if orjson.loads(row[4]).get("amount", -1) > 90
    )
    # Idempotent inserts and erasure still hold.
    assert store.insert([rows[0], rows[1]]) == 0
    assert store.insert([(b"\x01" * 16, "key_0", T0, T0, "{}")]) == 0
    store.close()


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store_as_version_7_left_it(path, event_rows(500))
    store = SQLiteStore(path, declared_properties=["amount"])
    assert store.wait_backfilled(60)
    store.close()
    migrated = contents(path), schema_of(path)
    store = SQLiteStore(path, declared_properties=["amount"])
    assert store.schema_version == SCHEMA_VERSION and store.wait_backfilled(60)
    store.close()
    assert (contents(path), schema_of(path)) == migrated


_MIGRATE_AND_STALL = """
import sys, time, apsw
from tlytics.store.sqlite.schema import migrate
path, marker = sys.argv[1], sys.argv[2]
connection = apsw.Connection(path)
calls = [0]
def stall():
    calls[0] += 1
    if calls[0] == 200:  # 200,000 instructions in: well inside the copy of 20,000 events
        with open(marker + ".tmp", "w") as out:
            out.write("migrating")
        import os
        os.replace(marker + ".tmp", marker)
        time.sleep(600)
    return False
connection.set_progress_handler(stall, 1000)
migrate(connection, path)
"""


def test_a_kill_in_the_middle_of_the_migration_leaves_the_old_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rows = event_rows(20_000)
    store_as_version_7_left_it(path, rows)
    before, old_schema = contents(path), schema_of(path)
    marker = tmp_path / "migrating"
    process = subprocess.Popen([sys.executable, "-c", _MIGRATE_AND_STALL, str(path), str(marker)])
    try:
        eventually(marker.exists, timeout_s=60, what="the migration under way")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    assert schema_of(path) == old_schema and contents(path) == before
    store = SQLiteStore(path)
    assert store.wait_backfilled(60)
    assert contents(path)["events"] == before["events"]
    store.close()


def test_a_repeated_id_in_one_batch_and_across_batches_is_stored_once(tmp_path: Path) -> None:
    """The staged insert keeps the first of a batch's repeated ids, and a later batch holding
    stored ids adds only the new ones, with the rollups counting each event once."""
    store = SQLiteStore(tmp_path / "s.db")
    first = (uuid.UUID(int=1).bytes, "a", T0, T0, '{"n":1}')
    repeat = (uuid.UUID(int=1).bytes, "b", T0 + 5, T0, '{"n":2}')
    other = (uuid.UUID(int=2).bytes, "a", T0 + 1, T0, "{}")
    assert store.insert([first, repeat, other]) == 2
    assert store.insert([other, (uuid.UUID(int=3).bytes, "a", T0 - 1, T0, "{}")]) == 1
    page = store.page(1, 10, ascending=True)
    assert [(event.id, event.key) for event in page.events] == [
        (str(uuid.UUID(int=3)), "a"),
        (str(uuid.UUID(int=1)), "a"),
        (str(uuid.UUID(int=2)), "a"),
    ]
    assert store.count() == 3 and store.keys_summary()[0][:2] == ("a", 3)
    later = store.page(1, 10, after=Position(timestamp_us=T0, id=uuid.UUID(int=1).bytes), ascending=True)
    assert [event.id for event in later.events] == [str(uuid.UUID(int=2))]
    store.close()


def test_inserts_into_the_clustered_table_keep_pace(tmp_path: Path) -> None:
    """Not a benchmark: a smoke check that a 20k-row batch does not take a pathological path
    (say, a full scan per row while dropping stored ids)."""
    store = SQLiteStore(tmp_path / "s.db")
    rows = event_rows(20_000)
    store.insert(rows[:10_000])
    started = time.monotonic()
    assert store.insert(rows) == 10_000  # half already stored: the slow path
    assert time.monotonic() - started < 60
    store.close()
