"""Pre-aggregates of declared properties of few values on PostgreSQL (issue 21, item 3): the
hourly counts (tlytics.store.postgres.preaggregates) answer a breakdown and a one-condition
`/stats` exactly as the JSON path does on the same events, for every operator, with or without
keys, over ranges whose edges cut hours, through backfills, erasure, retention (a dropped month
partition included), the limit of values, and two nodes inserting at once."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, cast
from unittest import mock

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.postgres_cluster import PostgresCluster
from tests.test_declared_properties import HOUR, MINUTE, MISSING, T0, VALUES, PostgresStore, filters, made_rows
from tests.test_preaggregates import condition_lists, counted_answers
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, StoreRow
from tlytics.store.postgres import declared as pg_declared
from tlytics.store.postgres import preaggregates
from tlytics.store.postgres.preaggregates import hour_sql

_databases = itertools.count()
DAY = 24 * HOUR


@pytest.fixture
def pg_urls(postgres_cluster: PostgresCluster) -> Iterator[list[str]]:
    names = [f"preagg_{next(_databases)}" for _ in range(2)]
    yield [postgres_cluster.create_database(name) for name in names]
    for name in names:
        postgres_cluster.drop_database(name)


def counted(url: str) -> dict[str, bool]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT path, counted FROM declared_properties WHERE complete").fetchall()
    return {str(path): bool(flag) for path, flag in rows}


def assert_counts_match_values(url: str, number: int = 1) -> None:
    """Every node's counts summed are exactly the stored values grouped by hour, key, kind and
    value (while the property is counted)."""
    with psycopg.connect(url) as connection:
        flag = connection.execute("SELECT counted FROM declared_properties WHERE number = %s", (number,)).fetchone()
        if flag is None or not flag[0]:
            return  # no longer counted: no read uses its counts
        stored = connection.execute(
            "SELECT hour, key, kind, val, sum(count)::bigint FROM property_counts WHERE property = %s"
            " GROUP BY 1, 2, 3, 4 HAVING sum(count) <> 0",
            (number,),
        ).fetchall()
        expected = connection.execute(
            f"SELECT {hour_sql('pv.ts')}, e.key, pv.kind, pv.val, count(*) FROM property_values pv"
            " JOIN events e ON e.ts = pv.ts AND e.id = pv.id WHERE pv.property = %s GROUP BY 1, 2, 3, 4",
            (number,),
        ).fetchall()
    assert set(stored) == set(expected)


def declared_store(url: str, before: list[StoreRow], newer: list[StoreRow], held: bool) -> PostgresStore:
    """A store of `before` declaring `p` after it (so `before` is backfilled) and `newer`:
    inserted while the backfill may run, or (`held`) before it starts, so that it walks events
    the inserts already valued and counted."""
    first = PostgresStore(url)
    first.insert(before)
    first.close()
    if not held:
        store = PostgresStore(url, declared_properties=["p"])
        store.insert(newer)
        return store
    with mock.patch.object(pg_declared.Backfill, "_run", lambda self: None):
        store = PostgresStore(url, declared_properties=["p"])
    store.insert(newer)
    store.close()
    return PostgresStore(url, declared_properties=["p"])


@pytest.mark.timeout(900)
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=30),
    after=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=15),
    conditions=condition_lists(),
    erase=filters(),
    expire_before=st.sampled_from([None, T0 + 20 * MINUTE, T0 + 2 * HOUR]),
    max_values=st.sampled_from([3, 8, 200]),
    held=st.booleans(),
)
def test_counted_answers_equal_undeclared_answers_on_postgresql(
    postgres_cluster: PostgresCluster,
    before: list[Any],
    after: list[Any],
    conditions: list[EventFilter],
    erase: EventFilter,
    expire_before: int | None,
    max_values: int,
    held: bool,
) -> None:
    names = [f"preagg_{next(_databases)}" for _ in range(2)]
    urls = [postgres_cluster.create_database(name) for name in names]
    stores: list[PostgresStore] = []
    try:
        with mock.patch.object(preaggregates, "MAX_COUNTED_VALUES", max_values):
            plain = PostgresStore(urls[0])
            stores.append(plain)
            newer = made_rows(after, len(before))
            plain.insert(made_rows(before, 0))
            plain.insert(newer)
            declared = declared_store(urls[1], made_rows(before, 0), newer, held)
            stores.append(declared)
            assert declared.wait_backfilled(60) and "p" in counted(urls[1])
            assert_counts_match_values(urls[1])
            sure, other = cast(Any, declared), cast(Any, plain)
            assert counted_answers(sure, conditions) == counted_answers(other, conditions)
            for store in (plain, declared):
                store.delete_matching(erase, max_rows=10_000, remember_ids=True)
                if expire_before is not None:
                    store.delete_matching(EventFilter(until_us=expire_before), max_rows=10_000, remember_ids=False)
                store.insert(made_rows(before, 0))
            assert_counts_match_values(urls[1])
            assert counted_answers(sure, conditions) == counted_answers(other, conditions)
    finally:
        for store in stores:
            store.close()
        for name in names:
            postgres_cluster.drop_database(name)


def paths(amounts: range, values: int, *, first: int = T0, step: int = MINUTE, prefix: str = "") -> list[StoreRow]:
    """Events `step` apart from `first`, each with one of `values` paths and two keys."""
    return [
        (
            uuid.UUID(int=n + 1).bytes,
            f"k{n % 2}",
            first + (n - amounts.start) * step,
            T0,
            orjson.dumps({"path": f"{prefix}/{n % values}"}).decode(),
        )
        for n in amounts
    ]


def test_the_counts_answer_on_postgresql(pg_urls: list[str]) -> None:
    """The counts are what answers whole hours: tampered counts change a breakdown and a
    filtered chart (so the per-event path did not serve them), the edges still per event."""
    store = PostgresStore(pg_urls[0], declared_properties=["path"])
    store.insert(paths(range(600), 5))  # 10 hours
    assert store.wait_backfilled(60) and counted(pg_urls[0]) == {"path": True}
    hours = EventFilter(since_us=T0, until_us=T0 + 10 * HOUR)
    where = replace(hours, where=(where_condition("data.path:/1"),))
    assert store.breakdown(hours, "path", 1).top == [("/0", 120)]
    assert store.bucket_counts([T0], T0 + 10 * HOUR, where, None) == [(120, None)]
    with psycopg.connect(pg_urls[0]) as connection:
        connection.execute(
            "UPDATE property_counts SET count = count + 10 WHERE val = '/1' AND hour = %s", (T0 // HOUR + 2,)
        )
        # A question that names no key reads the counts summed over the keys (issue 21).
        connection.execute(
            "UPDATE property_counts_all_keys SET count = count + 20 WHERE val = '/1' AND hour = %s", (T0 // HOUR + 2,)
        )
    assert store.breakdown(hours, "path", 1).top == [("/1", 140)]  # two keys in that hour
    assert store.bucket_counts([T0], T0 + 10 * HOUR, where, None) == [(140, None)]
    unequal = replace(hours, where=(where_condition("data.path!=/1"),))
    assert store.bucket_counts([T0], T0 + 10 * HOUR, unequal, None) == [(460, None)]  # 600 less the tampered 140
    edged = replace(where, since_us=T0 + 30 * MINUTE, until_us=T0 + HOUR)  # no whole hour: per event
    assert store.bucket_counts([T0], T0 + HOUR, edged, None) == [(6, None)]
    store.close()


def test_a_property_of_many_values_is_not_counted_on_postgresql(pg_urls: list[str]) -> None:
    """Past the limit of distinct values the counts are dropped for good; reads take the
    per-event path and answer the same."""
    store = PostgresStore(pg_urls[0], declared_properties=["path"])
    plain = PostgresStore(pg_urls[1])
    for made in (paths(range(300), 5), paths(range(300, 600), 400, first=T0 + 300 * MINUTE)):
        store.insert(made)
        plain.insert(made)
    assert store.wait_backfilled(60) and counted(pg_urls[0]) == {"path": False}
    hours = EventFilter(since_us=T0, until_us=T0 + 10 * HOUR)
    where = replace(hours, where=(where_condition("data.path:/1"),))
    assert store.breakdown(hours, "path", 3) == plain.breakdown(hours, "path", 3)
    assert store.bucket_counts([T0], T0 + 10 * HOUR, where, None) == plain.bucket_counts(
        [T0], T0 + 10 * HOUR, where, None
    )
    store.close()
    plain.close()
    reopened = PostgresStore(pg_urls[0], declared_properties=["path"])  # a declaration: stale rows go
    with psycopg.connect(pg_urls[0]) as connection:
        assert connection.execute("SELECT count(*) FROM property_counts").fetchone() == (0,)
    reopened.close()


def test_retention_dropping_a_partition_keeps_the_counts_exact(pg_urls: list[str]) -> None:
    """Retention drops December's partition whole and cuts January's: the counts left are
    exactly January's remaining values, and the answers those of the undeclared store."""
    december = paths(range(0, 300), 5, first=T0 - 10 * DAY, step=HOUR // 2)
    january = paths(range(300, 900), 5, first=T0, step=MINUTE)
    store = PostgresStore(pg_urls[0], declared_properties=["path"])
    plain = PostgresStore(pg_urls[1])
    for made in (december, january):
        store.insert(made)
        plain.insert(made)
    assert store.wait_backfilled(60)
    with psycopg.connect(pg_urls[0]) as connection:
        assert connection.execute("SELECT to_regclass('events_y2024m12')").fetchone() != (None,)
    cutoff = EventFilter(until_us=T0 + 90 * MINUTE)
    for each in (store, plain):
        assert each.delete_matching(cutoff, max_rows=10_000, remember_ids=False) >= 300
        each.delete_matching(cutoff, max_rows=10_000, remember_ids=False)  # what the drop left: January's cut
    with psycopg.connect(pg_urls[0]) as connection:
        assert connection.execute("SELECT to_regclass('events_y2024m12')").fetchone() == (None,)
        assert connection.execute("SELECT min(hour) FROM property_counts WHERE count <> 0").fetchone() == (
            T0 // HOUR + 1,
        )
    assert_counts_match_values(pg_urls[0])
    conditions = [EventFilter(where=(where_condition(text),)) for text in ("data.path:/1", "data.path!=/2")]
    assert counted_answers(cast(Any, store), conditions) == counted_answers(cast(Any, plain), conditions)
    year = EventFilter(since_us=T0 - 30 * DAY, until_us=T0 + DAY)
    assert store.breakdown(year, "path", 10) == plain.breakdown(year, "path", 10)
    store.close()
    plain.close()


def test_two_nodes_inserting_at_once_keep_the_counts_exact(pg_urls: list[str]) -> None:
    """Two nodes' writers insert batches of the same hours, keys and values at the same time
    (new values arriving on both): every batch lands, none deadlocks, the counts stay exact."""
    url = pg_urls[0]
    nodes = [PostgresStore(url, declared_properties=["path"]) for _ in range(2)]
    for index, store in enumerate(nodes):
        store.writer.node = f"n{index}"  # two nodes on one database
    assert nodes[0].wait_backfilled(60) and nodes[1].wait_backfilled(60)
    batches = 20
    failures: list[BaseException] = []

    def insert_batches(index: int) -> None:
        try:
            for batch in range(batches):
                first = (batch * 2 + index) * 100
                nodes[index].insert(paths(range(first, first + 100), 7 + batch, first=T0, step=MINUTE // 2))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=insert_batches, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads) and failures == []
    assert_counts_match_values(url)
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (2 * batches * 100,)
        assert connection.execute("SELECT count(DISTINCT node) FROM property_counts").fetchone() == (2,)
    whole = EventFilter(since_us=T0, until_us=T0 + 10 * HOUR)
    breakdown = nodes[0].breakdown(whole, "path", 100)
    assert breakdown.total == 4000 and breakdown.missing == 0 and sum(n for _, n in breakdown.top) == 4000
    assert counted(url) == {"path": True}
    for store in nodes:
        store.close()


def test_the_migration_counts_the_values_already_stored(pg_urls: list[str]) -> None:
    """A store of schema 7 (values, no counts) is counted from its stored values when a writer
    opens it: the counts match the values and answer."""
    store = PostgresStore(pg_urls[0], declared_properties=["path"])
    store.insert(paths(range(600), 5))
    assert store.wait_backfilled(60)
    expected = store.breakdown(EventFilter(), "path", 10)
    store.close()
    with psycopg.connect(pg_urls[0]) as connection:  # back to schema 7
        connection.execute("DROP TABLE property_counts, property_count_values, property_counts_all_keys")
        connection.execute("ALTER TABLE declared_properties DROP COLUMN counted")
        connection.execute("UPDATE tlytics_schema SET version = 7")
    reopened = PostgresStore(pg_urls[0], declared_properties=["path"])
    assert counted(pg_urls[0]) == {"path": True}
    assert_counts_match_values(pg_urls[0])
    with psycopg.connect(pg_urls[0]) as connection:
        assert connection.execute("SELECT sum(count) FROM property_counts").fetchone() == (600,)
    assert reopened.breakdown(EventFilter(), "path", 10) == expected
    reopened.close()
