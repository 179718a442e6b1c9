"""The all-keys twin of the hourly counts of declared properties (issue 21): on both backends
`property_counts_all_keys` is exactly `property_counts` summed over the keys after any mix of
inserts, erasure, retention (a dropped month partition included), backfill of a property
declared later, re-declaration and the passage past the limit of counted values; the answers
stay those of the store without declared properties; a question that names no key is
answered from the twin and one with `key=` from the keys' own counts; and the migration that
adds the twin fills it from the counts already kept."""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import apsw
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.postgres_cluster import PostgresCluster
from tests.test_declared_properties import HOUR, MINUTE, MISSING, T0, VALUES, PostgresStore, filters, made_rows
from tests.test_preaggregates import condition_lists, counted_answers, paths
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, SQLiteStore
from tlytics.store.postgres import preaggregates as pg_preaggregates
from tlytics.store.postgres.schema import SCHEMA_VERSION as PG_SCHEMA_VERSION
from tlytics.store.sqlite import preaggregates as sqlite_preaggregates
from tlytics.store.sqlite.schema import MIGRATIONS
from tlytics.store.sqlite.schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION

DAY = 24 * HOUR
_databases = itertools.count()
# The keys' counts summed over the keys: (property, hour, kind, value) -> count, sums of 0
# left out (SQLite deletes a count that falls to 0; PostgreSQL's nodes' rows may sum to 0).
_KEYED_SUMS = (
    "SELECT property, hour, kind, {value}, sum(count) FROM property_counts GROUP BY 1, 2, 3, 4 HAVING sum(count) <> 0"
)
# The all-keys counts, every row on SQLite (one at 0 would be a value shown with 0 events).
_SQLITE_ALL_KEYS = "SELECT property, hour, kind, value, count FROM property_counts_all_keys"
# Every node's rows summed on PostgreSQL (as its reads sum them).
_POSTGRES_ALL_KEYS = (
    "SELECT property, hour, kind, val, sum(count) FROM property_counts_all_keys GROUP BY 1, 2, 3, 4"
    " HAVING sum(count) <> 0"
)


@dataclass
class Backend:
    """One backend's stores by name, and SQL run on the store behind one of them."""

    name: str
    open_store: Callable[[str, list[str] | None], Any]
    execute: Callable[[Any, str, tuple[Any, ...]], list[tuple[Any, ...]]]
    value_column: str  # the counts' value column: `value` on SQLite, `val` on PostgreSQL
    all_keys_sql: str
    close: Callable[[], None]

    def sums(self, store: Any) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
        keyed = self.execute(store, _KEYED_SUMS.format(value=self.value_column), ())
        all_keys = self.execute(store, self.all_keys_sql, ())
        return {tuple(row) for row in keyed}, {tuple(row) for row in all_keys}


def sqlite_backend(directory: Path) -> Backend:
    def open_store(name: str, declared: list[str] | None) -> SQLiteStore:
        return SQLiteStore(directory / f"{name}.db", declared_properties=declared)

    def execute(store: SQLiteStore, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in store._write_connection.execute(sql, params)]

    return Backend("sqlite", open_store, execute, "value", _SQLITE_ALL_KEYS, lambda: None)


def postgres_backend(cluster: PostgresCluster) -> Backend:
    urls: dict[str, str] = {}
    created: list[str] = []

    def url_of(name: str) -> str:
        if name not in urls:
            database = f"allkeys_{next(_databases)}"
            created.append(database)
            urls[name] = cluster.create_database(database)
        return urls[name]

    def open_store(name: str, declared: list[str] | None) -> PostgresStore:
        store = PostgresStore(url_of(name), declared_properties=declared)
        store.url = url_of(name)  # for execute
        return store

    def execute(store: PostgresStore, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with psycopg.connect(store.url) as connection:
            cursor = connection.execute(sql.replace("?", "%s"), params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def close() -> None:
        for database in created:
            cluster.drop_database(database)

    return Backend("postgresql", open_store, execute, "val", _POSTGRES_ALL_KEYS, close)


@contextlib.contextmanager
def opened_backend(name: str, cluster: PostgresCluster) -> Iterator[Backend]:
    with tempfile.TemporaryDirectory() as work:
        backend = sqlite_backend(Path(work)) if name == "sqlite" else postgres_backend(cluster)
        try:
            yield backend
        finally:
            backend.close()


def assert_twin_exact(backend: Backend, store: Any) -> None:
    assert store.wait_backfilled(60)
    keyed, all_keys = backend.sums(store)
    assert all_keys == keyed


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=15)),
        st.tuples(st.just("erase"), filters()),
        # Retention: within the first hour, after two hours, and past the first month (on
        # PostgreSQL, a dropped partition).
        st.tuples(st.just("expire"), st.sampled_from([T0 + 20 * MINUTE, T0 + 2 * HOUR, T0 + 40 * DAY])),
        st.tuples(st.just("redeclare"), st.none()),
    ),
    max_size=5,
)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=25),
    operations=OPERATIONS,
    conditions=condition_lists(),
    max_values=st.sampled_from([3, 8, 200]),
)
def test_the_all_keys_counts_are_the_keys_counts_summed(
    postgres_cluster: PostgresCluster,
    backend_name: str,
    before: list[Any],
    operations: list[tuple[str, Any]],
    conditions: list[EventFilter],
    max_values: int,
) -> None:
    limits = (
        mock.patch.object(sqlite_preaggregates, "MAX_COUNTED_VALUES", max_values),
        mock.patch.object(pg_preaggregates, "MAX_COUNTED_VALUES", max_values),
    )
    with opened_backend(backend_name, postgres_cluster) as backend, limits[0], limits[1]:
        plain = backend.open_store("plain", None)
        earlier = backend.open_store("declared", None)
        for store in (plain, earlier):
            store.insert(made_rows(before, 0))
        earlier.close()
        declared = backend.open_store("declared", ["p", "q"])  # both backfilled
        stores = [plain, declared]
        try:
            assert_twin_exact(backend, declared)
            written = len(before)
            for operation, argument in operations:
                if operation == "insert":
                    for store in stores:
                        store.insert(made_rows(argument, written))
                    written += len(argument)
                elif operation == "erase":
                    for store in stores:
                        store.delete_matching(argument, max_rows=10_000, remember_ids=True)
                elif operation == "expire":
                    for store in stores:
                        store.delete_matching(EventFilter(until_us=argument), max_rows=10_000, remember_ids=False)
                else:  # `p` forgotten, then declared again: backfilled from the first event
                    for declaring in (["q"], ["p", "q"]):
                        stores[1].close()
                        stores[1] = backend.open_store("declared", declaring)
                        assert stores[1].wait_backfilled(60)
                assert_twin_exact(backend, stores[1])
            assert counted_answers(stores[1], conditions) == counted_answers(plain, conditions)
        finally:
            for store in stores:
                store.close()


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
def test_a_question_without_key_is_answered_from_the_all_keys_counts(
    postgres_cluster: PostgresCluster, backend_name: str
) -> None:
    """Tampered all-keys counts change the answers that name no key and not those with `key=`;
    tampered keys' counts change those with `key=` and not the others."""
    with opened_backend(backend_name, postgres_cluster) as backend:
        store = backend.open_store("s", ["path"])
        try:
            store.insert(paths(range(600), 5))  # 10 hours, two keys: each path 6 times a key and hour
            assert store.wait_backfilled(60)
            hours = EventFilter(since_us=T0, until_us=T0 + 10 * HOUR)
            one_key = replace(hours, keys=("k0",))
            equal = (where_condition("data.path:/1"),)

            def answers() -> tuple[Any, ...]:
                return (
                    store.breakdown(hours, "path", 1).top,
                    store.bucket_counts([T0], T0 + 10 * HOUR, replace(hours, where=equal), None),
                    store.breakdown(one_key, "path", 1).top,
                    store.bucket_counts([T0], T0 + 10 * HOUR, replace(one_key, where=equal), None),
                )

            assert answers() == ([("/0", 120)], [(120, None)], [("/0", 60)], [(60, None)])
            hour = T0 // HOUR + 2
            value = backend.value_column
            backend.execute(
                store,
                f"UPDATE property_counts_all_keys SET count = count + 100 WHERE {value} = '/1' AND hour = ?",
                (hour,),
            )
            assert answers() == ([("/1", 220)], [(220, None)], [("/0", 60)], [(60, None)])
            backend.execute(
                store,
                f"UPDATE property_counts SET count = count + 50 WHERE {value} = '/1' AND key = 'k0' AND hour = ?",
                (hour,),
            )
            assert answers() == ([("/1", 220)], [(220, None)], [("/1", 110)], [(110, None)])
        finally:
            store.close()


def test_the_migration_fills_the_all_keys_counts_on_sqlite(tmp_path: Path) -> None:
    """A store of the previous schema (every migration but the twin's) gets the twin summed
    from its counts when the writer opens it, and its answers do not change."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.insert(paths(range(300), 5))
    store.close()
    store = SQLiteStore(path, declared_properties=["path"])  # backfilled
    store.insert(paths(range(300, 600), 5))  # counted by the inserts
    assert store.wait_backfilled(60)
    store.delete_matching(EventFilter(keys=("k0",), until_us=T0 + 3 * HOUR), max_rows=10_000, remember_ids=True)
    hours = EventFilter(since_us=T0, until_us=T0 + 10 * HOUR)
    expected = (store.breakdown(hours, "path", 5), store.breakdown(EventFilter(), "path", 5))
    store.close()
    connection = apsw.Connection(str(path))
    with connection:
        connection.execute("DROP TABLE property_counts_all_keys")
        connection.pragma("user_version", SQLITE_SCHEMA_VERSION - 1)
    previous = apsw.Connection(str(tmp_path / "previous.db"))  # the previous schema, as its migrations make it
    with previous:
        for migration in MIGRATIONS[:-1]:
            if isinstance(migration, str):
                previous.execute(migration)
            else:
                migration(previous)
    schema = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite%' ORDER BY name"
    assert connection.execute(schema).fetchall() == previous.execute(schema).fetchall()
    connection.close()
    previous.close()
    store = SQLiteStore(path, declared_properties=["path"])
    try:
        assert store.schema_version == SQLITE_SCHEMA_VERSION
        backend = sqlite_backend(tmp_path)
        keyed, all_keys = backend.sums(store)
        assert all_keys == keyed and sum(row[-1] for row in all_keys) == 600 - 90  # k0's first 3 hours erased
        assert (store.breakdown(hours, "path", 5), store.breakdown(EventFilter(), "path", 5)) == expected
    finally:
        store.close()


def test_the_migration_fills_the_all_keys_counts_on_postgresql(postgres_cluster: PostgresCluster) -> None:
    """A database of the previous schema gets the twin summed from its counts (the backfill's
    node '' and an inserting node's, negative ones after an erasure included) when a writer
    opens it, and its answers do not change."""
    with opened_backend("postgresql", postgres_cluster) as backend:
        store = backend.open_store("s", None)
        store.insert(paths(range(300), 5))
        store.close()
        store = backend.open_store("s", ["path"])
        store.insert(paths(range(300, 600), 5))
        assert store.wait_backfilled(60)
        store.delete_matching(EventFilter(keys=("k0",), until_us=T0 + 3 * HOUR), max_rows=10_000, remember_ids=True)
        hours = EventFilter(since_us=T0, until_us=T0 + 10 * HOUR)
        expected = (store.breakdown(hours, "path", 5), store.breakdown(EventFilter(), "path", 5))
        url = store.url
        store.close()
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT count(*) FROM property_counts WHERE count < 0").fetchone() != (0,)
            connection.execute("DROP TABLE property_counts_all_keys")
            connection.execute("UPDATE tlytics_schema SET version = %s", (PG_SCHEMA_VERSION - 1,))
        store = backend.open_store("s", ["path"])
        try:
            with psycopg.connect(url) as connection:
                assert connection.execute("SELECT version FROM tlytics_schema").fetchone() == (PG_SCHEMA_VERSION,)
            keyed, all_keys = backend.sums(store)
            assert all_keys == keyed and sum(row[-1] for row in all_keys) == 600 - 90
            assert (store.breakdown(hours, "path", 5), store.breakdown(EventFilter(), "path", 5)) == expected
        finally:
            store.close()
