"""Reads of a declared property that its stored values answer alone on PostgreSQL (issue 21):
the distinct values per bucket and in all (`/stats?unique=`), a one-condition `/stats` of a
property declared but not counted (too many values), and `/view` pages of one condition (by
number and by cursor, with their totals) — each the JSON path's answer on the same
events, over buckets and windows that do not line up (a window starting inside the first
bucket or ending after the last one), through erasure and retention."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, cast
from unittest import mock

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.postgres_cluster import PostgresCluster
from tests.test_declared_properties import HOUR, MINUTE, MISSING, T0, VALUES, PostgresStore, every_condition, made_rows
from tlytics.store import EventFilter
from tlytics.store.postgres import preaggregates

_databases = itertools.count()
# Hourly buckets, a zone half an hour off, and 2-hour buckets: each with windows that cut them.
BUCKET_SETS = [
    ([T0 - HOUR + n * HOUR for n in range(8)], T0 + 7 * HOUR),
    ([T0 - HOUR + 30 * MINUTE + n * HOUR for n in range(8)], T0 + 7 * HOUR + 30 * MINUTE),
    ([T0 + n * 2 * HOUR for n in range(3)], T0 + 6 * HOUR),
    ([T0 + 30 * MINUTE, T0 + HOUR], T0 + 2 * HOUR),  # values before and after the buckets
]
WINDOWS = [
    (None, None),
    (T0 + 20 * MINUTE, T0 + 3 * HOUR),
    (T0 - 2 * HOUR, T0 + 9 * HOUR),
    (T0 + HOUR, T0 + HOUR),
    (T0 + 4 * HOUR, None),
]


@pytest.fixture
def pg_urls(postgres_cluster: PostgresCluster) -> Iterator[list[str]]:
    names = [f"declared_reads_{next(_databases)}" for _ in range(2)]
    yield [postgres_cluster.create_database(name) for name in names]
    for name in names:
        postgres_cluster.drop_database(name)


def value_answers(store: Any, conditions: list[EventFilter]) -> list[Any]:
    """Distinct values of `p` per bucket and in all, and per-bucket counts of each condition,
    over every bucket set and window."""
    found: list[Any] = []
    for since, until in WINDOWS:
        window = EventFilter(since_us=since, until_us=until)
        for starts, end in BUCKET_SETS:
            found.append(store.unique_counts(starts, end, window, "p"))
            found += [
                store.bucket_counts(starts, end, EventFilter(since_us=since, until_us=until, where=single.where), None)
                for single in conditions
            ]
    return found


def pages_walked(store: Any, conditions: list[EventFilter]) -> list[Any]:
    """For each condition alone and within a window: pages by number (the second), and every
    page by cursor, newest and oldest first (events' ids and each page's total)."""
    found: list[Any] = []
    for single, (since, until) in itertools.product(conditions, WINDOWS[:3]):
        where = EventFilter(since_us=since, until_us=until, where=single.where)
        second = store.page(2, 3, where=where)
        found.append((second.total, [event.id for event in second.events]))
        for ascending in (False, True):
            after = None
            for _ in range(30):  # at most 90 events
                shown = store.page(1, 4, where=where, after=after, ascending=ascending)
                found.append((shown.total, [event.id for event in shown.events]))
                after = shown.next_position
                if after is None:
                    break
    return found


@pytest.mark.timeout(900)
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=40),
    conditions=st.lists(st.sampled_from(every_condition()), min_size=4, max_size=10, unique_by=repr),
    erased=st.sampled_from(every_condition()),
    expire_before=st.sampled_from([None, T0 + 20 * MINUTE, T0 + 2 * HOUR]),
)
@example(  # values after every bucket set's end, repeated values, each kind
    values=[n % 9 if n % 4 else f"v{n % 5}" for n in range(45)] + [None, True, "1", 1.0, MISSING] * 3,
    conditions=every_condition()[:6],
    erased=every_condition()[8],
    expire_before=T0 + 20 * MINUTE,
)
def test_values_alone_answer_as_the_json_path(
    pg_urls: list[str], values: list[Any], conditions: list[EventFilter], erased: EventFilter, expire_before: int | None
) -> None:
    for url in pg_urls:  # a database per example
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    # Never counted (no value is few enough): the declared, uncounted reads answer.
    with mock.patch.object(preaggregates, "MAX_COUNTED_VALUES", 0):
        plain = PostgresStore(pg_urls[0])
        declared = PostgresStore(pg_urls[1], declared_properties=["p"])
        try:
            for store in (plain, declared):
                store.insert(made_rows(values, 0))
            assert declared.wait_backfilled(60)
            sure, other = cast(Any, declared), cast(Any, plain)
            assert value_answers(sure, conditions) == value_answers(other, conditions)
            assert pages_walked(sure, conditions) == pages_walked(other, conditions)
            for store in (plain, declared):
                store.delete_matching(erased, max_rows=10_000, remember_ids=True)
                if expire_before is not None:
                    store.delete_matching(EventFilter(until_us=expire_before), max_rows=10_000, remember_ids=False)
            assert value_answers(sure, conditions) == value_answers(other, conditions)
        finally:
            plain.close()
            declared.close()
