"""Pre-aggregates of declared properties of few values (issue 21, item 3): hourly counts per
key and value answer a breakdown and a one-condition `/stats`, and answer exactly what the
JSON path answers on the same events, for every operator, with or without keys, over ranges
whose edges cut hours, whatever was backfilled, inserted during the backfill, erased, expired
or stored again, and whether or not the property passed the limit of values on the way."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import apsw
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_declared_properties import (
    HOUR,
    MINUTE,
    MISSING,
    T0,
    VALUES,
    both_stores,
    every_condition,
    filters,
    made_rows,
)
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, SQLiteStore, StoreRow
from tlytics.store.sqlite import preaggregates
from tlytics.store.sqlite.preaggregate_reads import counted_properties
from tlytics.store.sqlite.preaggregates import hour_sql
from tlytics.store.sqlite.properties import PropertyKeeper, complete_properties
from tlytics.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

KEY_SETS: list[tuple[str, ...]] = [(), ("k0",), ("k1", "k2")]
# Hourly buckets, the same half an hour off (a zone at UTC+5:30), and 2-hour buckets cut by
# a window: whole hours, edges, and buckets the hour does not divide.
BUCKET_SETS = [
    ([T0 - HOUR + n * HOUR for n in range(8)], T0 + 7 * HOUR),
    ([T0 - HOUR + 30 * MINUTE + n * HOUR for n in range(8)], T0 + 7 * HOUR + 30 * MINUTE),
    ([T0 - 2 * HOUR + n * 2 * HOUR for n in range(5)], T0 + 8 * HOUR),
]
WINDOWS = [(None, None), (T0 + 20 * MINUTE, T0 + 3 * HOUR), (T0 + HOUR, T0 + 4 * HOUR), (T0 + HOUR, T0 + HOUR)]


def counted_answers(store: SQLiteStore, conditions: list[EventFilter]) -> list[Any]:
    """Every read the counts may answer: per-bucket counts of each single condition, and
    breakdowns of `p`, each with every key set and over windows whose edges cut hours."""
    found: list[Any] = []
    for keys in KEY_SETS:
        for since, until in WINDOWS:
            window = EventFilter(keys=keys, since_us=since, until_us=until)
            found += [store.breakdown(window, "p", limit) for limit in (1, 3, 50)]
            for single in conditions:
                where = replace(single, keys=keys, since_us=since, until_us=until)
                found += [store.bucket_counts(starts, end, where, None) for starts, end in BUCKET_SETS]
    return found


def assert_counts_match_values(store: SQLiteStore) -> None:
    """The counts are exactly the stored values grouped by hour, key, kind and value (or none
    at all once the property is no longer counted)."""
    connection = store._write_connection
    stored = set(connection.execute("SELECT hour, key, kind, value, count FROM property_counts WHERE property = 1"))
    if not connection.execute("SELECT counted FROM declared_properties WHERE number = 1").get:
        assert stored == set()
        return
    expected = set(
        connection.execute(
            f"SELECT {hour_sql('e.ts')}, e.key, pv.kind, coalesce(pv.value, ''), count(*) FROM property_values pv"
            " JOIN events e ON e.ts = pv.ts AND e.id = pv.id WHERE pv.property = 1 GROUP BY 1, 2, 3, 4"
        )
    )
    assert stored == expected


@st.composite
def condition_lists(draw: st.DrawFn) -> list[EventFilter]:
    """`:*` and a few conditions of every operator (all of them each time would take minutes)."""
    every = every_condition()
    return [every[0], *draw(st.lists(st.sampled_from(every[1:]), min_size=4, max_size=12, unique_by=repr))]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=30),
    after=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=15),
    conditions=condition_lists(),
    erase=filters(),
    expire_before=st.sampled_from([None, T0 + 20 * MINUTE, T0 + 2 * HOUR]),
    max_values=st.sampled_from([3, 8, 200]),
    held=st.booleans(),
)
def test_counted_answers_equal_undeclared_answers(
    before: list[Any],
    after: list[Any],
    conditions: list[EventFilter],
    erase: EventFilter,
    expire_before: int | None,
    max_values: int,
    held: bool,
) -> None:
    with mock.patch.object(preaggregates, "MAX_COUNTED_VALUES", max_values), tempfile.TemporaryDirectory() as work:
        newer = made_rows(after, len(before))
        if held:  # `newer` inserted before the backfill starts: it walks events already counted
            plain, declared = stores_with_held_backfill(Path(work), made_rows(before, 0), newer)
        else:
            plain, declared = both_stores(Path(work), made_rows(before, 0))
        try:
            if not held:
                plain.insert(newer)
                declared.insert(newer)  # perhaps while the backfill runs: both count, once
            assert declared.wait_backfilled(60) and "p" in complete_properties(declared._read_connection())
            assert_counts_match_values(declared)
            assert counted_answers(declared, conditions) == counted_answers(plain, conditions)
            for store in (plain, declared):
                store.delete_matching(erase, max_rows=10_000, remember_ids=True)
                if expire_before is not None:
                    store.delete_matching(EventFilter(until_us=expire_before), max_rows=10_000, remember_ids=False)
                store.insert(made_rows(before, 0))
            assert_counts_match_values(declared)
            assert counted_answers(declared, conditions) == counted_answers(plain, conditions)
        finally:
            plain.close()
            declared.close()


def stores_with_held_backfill(
    directory: Path, before: list[StoreRow], newer: list[StoreRow]
) -> tuple[SQLiteStore, SQLiteStore]:
    """Stores holding `before` then `newer`, the second declaring `p` after `before` with its
    backfill held until `newer` was inserted (so its values and counts came from the inserts)."""
    plain, declared = SQLiteStore(directory / "plain.db"), SQLiteStore(directory / "declared.db")
    for store in (plain, declared):
        store.insert(before)
    declared.close()
    with mock.patch.object(PropertyKeeper, "_backfill_all", lambda self: None):
        declared = SQLiteStore(directory / "declared.db", declared_properties=["p"])
    for store in (plain, declared):
        store.insert(newer)
    declared.close()
    return plain, SQLiteStore(directory / "declared.db", declared_properties=["p"])


def paths(amounts: range, values: int) -> list[StoreRow]:
    """Events a minute apart, each with one of `values` paths and two keys."""
    return [
        (
            uuid.UUID(int=n + 1).bytes,
            f"k{n % 2}",
            T0 + n * MINUTE,
            T0,
            orjson.dumps({"path": f"/{n % values}"}).decode(),
        )
        for n in amounts
    ]


def test_the_counts_answer_once_complete(tmp_path: Path) -> None:
    """The counts are what answers whole hours: tampered counts change a breakdown and a
    filtered chart (so the per-event path did not serve them), the edges still per event."""
    store = SQLiteStore(tmp_path / "s.db", declared_properties=["path"])
    store.insert(paths(range(600), 5))  # 10 hours
    assert store.wait_backfilled(60) and counted_properties(store._read_connection()) == {"path": 1}
    hours = EventFilter(since_us=T0, until_us=T0 + 10 * HOUR)
    where = replace(hours, where=(where_condition("data.path:/1"),))
    assert store.breakdown(hours, "path", 1).top == [("/0", 120)]
    assert store.bucket_counts([T0], T0 + 10 * HOUR, where, None) == [(120, None)]
    store._write_connection.execute(
        "UPDATE property_counts SET count = count + 10 WHERE value = '/1' AND hour = ?", (T0 // HOUR + 2,)
    )
    # A question that names no key reads the counts summed over the keys (issue 21).
    store._write_connection.execute(
        "UPDATE property_counts_all_keys SET count = count + 20 WHERE value = '/1' AND hour = ?", (T0 // HOUR + 2,)
    )
    assert store.breakdown(hours, "path", 1).top == [("/1", 140)]  # two keys in that hour
    assert store.bucket_counts([T0], T0 + 10 * HOUR, where, None) == [(140, None)]
    edged = replace(where, since_us=T0 + 30 * MINUTE, until_us=T0 + HOUR)  # no whole hour: per event
    assert store.bucket_counts([T0], T0 + HOUR, edged, None) == [(6, None)]
    store.close()


def test_a_property_of_many_values_is_not_counted(tmp_path: Path) -> None:
    """Past the limit of distinct values the counts are dropped for good; reads take the
    per-event path and answer the same."""
    store = SQLiteStore(tmp_path / "s.db", declared_properties=["path"])
    plain = SQLiteStore(tmp_path / "plain.db")
    for made in (paths(range(300), 5), paths(range(300, 600), 400)):
        store.insert(made)
        plain.insert(made)
    assert store.wait_backfilled(60) and complete_properties(store._read_connection()) == {"path": 1}
    assert counted_properties(store._read_connection()) == {}
    assert store._write_connection.execute("SELECT count(*) FROM property_counts").get == 0
    assert store._write_connection.execute("SELECT count(*) FROM property_count_values").get == 0
    hours = EventFilter(since_us=T0, until_us=T0 + 10 * HOUR)
    where = replace(hours, where=(where_condition("data.path:/1"),))
    assert store.breakdown(hours, "path", 3) == plain.breakdown(hours, "path", 3)
    assert store.bucket_counts([T0], T0 + 10 * HOUR, where, None) == plain.bucket_counts(
        [T0], T0 + 10 * HOUR, where, None
    )
    store.close()
    plain.close()


def store_before_counts(path: Path, events: list[StoreRow], declared: bool) -> None:
    """A store at the schema before the counts' migration, its events (and, `declared`, the
    values of `path`) written by hand as that schema's writer wrote them."""
    counts_migration = MIGRATIONS.index(preaggregates_migration())
    connection = apsw.Connection(str(path))
    with connection:
        for number, migration in enumerate(MIGRATIONS[:counts_migration], start=1):
            if isinstance(migration, str):
                connection.execute(migration)
            else:
                migration(connection)
            connection.pragma("user_version", number)
        connection.executemany("INSERT INTO events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?)", events)
        if declared:
            connection.execute(
                "INSERT INTO declared_properties (number, path, backfilled_ts, backfilled_id, complete)"
                " VALUES (1, 'path', 0, x'', 1)"
            )
            connection.execute(
                "INSERT INTO property_values (property, ts, id, kind, value)"
                " SELECT 1, ts, id, 2, json_extract(data, '$.path') FROM events"
            )
    connection.close()


def preaggregates_migration() -> Any:
    return next(m for m in MIGRATIONS if getattr(m, "__name__", "") == "_add_property_counts")


def test_the_migration_counts_the_values_already_stored(tmp_path: Path) -> None:
    few, many = tmp_path / "few.db", tmp_path / "many.db"
    store_before_counts(few, paths(range(600), 5), declared=True)
    store_before_counts(many, paths(range(600), 300), declared=True)
    store = SQLiteStore(few)
    assert store.schema_version == SCHEMA_VERSION
    assert counted_properties(store._read_connection()) == {"path": 1}
    assert_counts_match_values(store)
    assert store.breakdown(EventFilter(), "path", 2).top == [("/0", 120), ("/1", 120)]
    store.insert(paths(range(600, 660), 5))
    assert store.breakdown(EventFilter(), "path", 1).top == [("/0", 132)]
    store.close()
    store = SQLiteStore(many)
    assert counted_properties(store._read_connection()) == {}
    assert complete_properties(store._read_connection()) == {"path": 1}
    assert store.breakdown(EventFilter(), "path", 1).top == [("/0", 2)]
    store.close()
