"""The declared backfill walking several properties at once (issue 21, backfill21): properties
stopped at different positions meet and go on together, each event's value is stored once
(also those the inserts stored meanwhile), the counts are those of the stored values, and a
backfill killed with SIGKILL resumes where its last chunk committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, cast
from unittest import mock

import apsw
import orjson

from tlytics.store import SQLiteStore, StoreRow
from tlytics.store.sqlite import property_backfill
from tlytics.store.sqlite.preaggregates import hour_sql
from tlytics.store.sqlite.properties import PropertyKeeper
from tlytics.store.sqlite.property_backfill import MAX_CHUNK, MIN_CHUNK, PropertyBackfill, next_chunk_size

T0 = 1_700_000_000_000_000
SECOND = 1_000_000
PATHS = ["amount", "path", "user", "nested.flag"]


def events(numbers: range) -> list[StoreRow]:
    """Events a second apart with every JSON type among their properties, some missing."""
    rows: list[StoreRow] = []
    for n in numbers:
        data: dict[str, Any] = {"amount": n % 7 if n % 5 else n / 4, "path": f"/{n % 3}", "user": f"u{n % 41}"}
        if n % 4 == 0:
            data["nested"] = {"flag": [True, False, None, "x"][n // 4 % 4]}
        if n % 9 == 0:
            del data["path"]
        if n % 11 == 0:
            data["user"] = [n] if n % 2 else {"u": n}
        rows.append((uuid.UUID(int=n + 1).bytes, f"k{n % 3}", T0 + n * SECOND, T0, orjson.dumps(data).decode()))
    return rows


def assert_values_exact(path: Path) -> None:
    """Every declared property is complete, with one value per event holding it, as the JSON
    gives it, and its counts (while counted) are its values grouped by hour, key and value."""
    connection = apsw.Connection(str(path))
    try:
        declared = list(connection.execute("SELECT number, path, complete FROM declared_properties"))
        assert declared and all(complete for _, _, complete in declared)
        for number, name, _ in declared:
            expected = sorted(
                connection.execute(
                    "SELECT ts, id, json_type(data, ?1), json_extract(data, ?1) FROM events"
                    " WHERE json_type(data, ?1) IS NOT NULL",
                    ("$." + cast(str, name),),
                ),
                key=repr,
            )
            stored = sorted(
                connection.execute("SELECT ts, id, kind, value FROM property_values WHERE property = ?", (number,)),
                key=repr,
            )
            assert [(ts, id_, value) for ts, id_, _, value in stored] == [
                (ts, id_, value) for ts, id_, _, value in expected
            ], name
            counts = set(
                connection.execute(
                    "SELECT hour, key, kind, value, count FROM property_counts WHERE property = ?", (number,)
                )
            )
            if connection.execute("SELECT counted FROM declared_properties WHERE number = ?", (number,)).get:
                assert counts == set(
                    connection.execute(
                        f"SELECT {hour_sql('e.ts')}, e.key, pv.kind, coalesce(pv.value, ''), count(*)"
                        " FROM property_values pv JOIN events e ON e.ts = pv.ts AND e.id = pv.id"
                        " WHERE pv.property = ? GROUP BY 1, 2, 3, 4",
                        (number,),
                    )
                )
            else:
                assert counts == set()
    finally:
        connection.close()


def test_properties_behind_and_ahead_meet_and_each_value_is_stored_once(tmp_path: Path) -> None:
    """`amount` and `path` stopped after a few small chunks, `nested.flag` declared later and
    `user` with them: the two new ones walk from the first event to where the others stand,
    then all four together; events inserted (also among the old ones) meanwhile counted once."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.insert(events(range(0, 3000, 2)))
    store.close()
    with (
        mock.patch.object(property_backfill, "FIRST_CHUNK", 97),
        mock.patch.object(property_backfill, "MIN_CHUNK", 97),
        mock.patch.object(property_backfill, "MAX_CHUNK", 97),
    ):
        with mock.patch.object(PropertyKeeper, "_backfill_all", lambda self: None):
            store = SQLiteStore(path, declared_properties=["amount", "path"])
        keeper = store._properties
        chunks = iter(range(6))
        PropertyBackfill(store._write_connection, keeper.lock, keeper.counted).run(lambda: next(chunks, None) is None)
        store.insert(events(range(1, 400, 2)))  # among the events `amount` and `path` walked
        store.close()
        reading = apsw.Connection(str(path))
        positions = {
            cast(str, name): cast(int, ts)
            for name, ts in reading.execute("SELECT path, backfilled_ts FROM declared_properties")
        }
        reading.close()
        assert T0 < positions["amount"] == positions["path"] < T0 + 2999 * SECOND
        store = SQLiteStore(path, declared_properties=PATHS)
        store.insert(events(range(2001, 2600, 2)))  # ahead of every property, perhaps walked meanwhile
        assert store.wait_backfilled(60)
        store.close()
    assert_values_exact(path)


def test_chunks_grow_while_quick_and_stay_within_bounds() -> None:
    """A quick chunk doubles the next one (no more), a slow one brings it back, never below
    the 20,000 events of the backfill before nor above the bound."""
    assert next_chunk_size(MIN_CHUNK, 0.01) == 2 * MIN_CHUNK
    assert next_chunk_size(MAX_CHUNK, 0.01) == MAX_CHUNK
    assert next_chunk_size(4 * MIN_CHUNK, 2 * property_backfill.TARGET_CHUNK_S) == 2 * MIN_CHUNK
    assert next_chunk_size(MIN_CHUNK, 60.0) == MIN_CHUNK == 20_000


_BACKFILLING = """
import sys, time
from tlytics.store.sqlite import property_backfill
from tlytics.store import SQLiteStore
property_backfill.FIRST_CHUNK = property_backfill.MIN_CHUNK = property_backfill.MAX_CHUNK = 500
store = SQLiteStore(sys.argv[1], declared_properties=sys.argv[2:])
time.sleep(120)  # killed long before
"""


def test_a_backfill_killed_mid_way_resumes_and_stores_each_value_once(tmp_path: Path) -> None:
    """SIGKILL during a backfill of three properties (chunks of 500 events): what committed is
    kept, the next start walks on from there, and every value is stored exactly once."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.insert(events(range(40_000)))
    store.close()
    process = subprocess.Popen(
        [sys.executable, "-c", _BACKFILLING, str(path), "amount", "path", "user"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        started = False
        while not started and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            started = _positions_moved(path)
        assert started, "the backfill did not start within 60 s"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    connection = apsw.Connection(str(path))
    done = connection.execute("SELECT count(*) FROM declared_properties WHERE complete").get
    connection.close()
    assert done == 0  # killed mid-way: 40,000 events are 80 chunks, the kill came after the first
    store = SQLiteStore(path, declared_properties=["amount", "path", "user"])
    assert store.wait_backfilled(120)
    store.close()
    assert_values_exact(path)


def _positions_moved(path: Path) -> bool:
    try:
        connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            moved = connection.execute("SELECT count(*) FROM declared_properties WHERE backfilled_ts > ?", (T0,)).get
        finally:
            connection.close()
    except apsw.Error:  # the table not there yet, or the store being migrated
        return False
    return cast(int, moved) > 0
