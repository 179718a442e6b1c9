"""`~` on a counted property on PostgreSQL (issue 21): the listed values the search keeps are
found first and their counts read by equality. The answers are the JSON path's for the
characters a search could mistake (LIKE's `%` and `_`, a regex's `.` and `*`, a backslash),
ASCII case folded and other letters not, the empty search, and strings holding U+0000 or
U+0001 (stored coded); and the counts, not the events, answer the whole hours."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import psycopg
import pytest

from tests.postgres_cluster import PostgresCluster
from tests.test_declared_properties import HOUR, MINUTE, T0, PostgresStore
from tests.test_preaggregates import counted_answers
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, StoreRow

_databases = itertools.count()

# Strings a text search could mistake for patterns, in both cases, and coded characters.
STRINGS = [
    *("a%b", "a_b", "A.B", "a*b", "a\\b", "ab", "AB", "", "x", "École", "école"),
    *("a\x00b", "a\x01b", "\x01\x02", "%", "_", "[a]", "(a|b)", "^a$"),
]
# Searches of each kind; `~` takes its text as it is (no quotes, no escapes).
SEARCHES = [
    *("", "%", "_", ".", "*", "\\", "a", "A", "b", "ab", "a%", "%b", "a_", "A.", ".b", "É", "é", "cole"),
    *("a\x00", "\x00b", "\x01", "\x02", "[a]", "(a|b)", "^a", "a$", "nothing"),
]


@pytest.fixture
def pg_urls(postgres_cluster: PostgresCluster) -> Iterator[list[str]]:
    names = [f"contains_{next(_databases)}" for _ in range(2)]
    yield [postgres_cluster.create_database(name) for name in names]
    for name in names:
        postgres_cluster.drop_database(name)


def events() -> list[StoreRow]:
    """Each string (and a number, true, null, an object and a missing property beside them),
    several times over eight hours, three keys."""
    values: list[Any] = [*STRINGS, 1, True, None, {"a": "b"}]
    made = []
    for n in range(len(values) * 6):
        value = values[n % len(values)]
        data = {"q": n} if n % 13 == 0 else {"p": value}
        made.append((uuid.UUID(int=n + 1).bytes, f"k{n % 3}", T0 + n * 3 * MINUTE, T0, orjson.dumps(data).decode()))
    return made


def test_contains_on_a_counted_property_answers_as_the_json_path(pg_urls: list[str]) -> None:
    declared = PostgresStore(pg_urls[0], declared_properties=["p"])
    plain = PostgresStore(pg_urls[1])
    try:
        for store in (declared, plain):
            store.insert(events())
        assert declared.wait_backfilled(60)
        with psycopg.connect(pg_urls[0]) as connection:
            assert connection.execute("SELECT counted FROM declared_properties").fetchall() == [(True,)]
        conditions = [EventFilter(where=(where_condition(f"data.p~{text}"),)) for text in SEARCHES]
        assert counted_answers(declared, conditions) == counted_answers(plain, conditions)  # type: ignore[arg-type]
    finally:
        declared.close()
        plain.close()


def test_the_counts_answer_contains(pg_urls: list[str]) -> None:
    """Tampered counts of a value the search keeps change its whole hours (so the counts
    answered them); a value it does not keep is not summed; an edge is still read per event."""
    store = PostgresStore(pg_urls[0], declared_properties=["p"])
    try:
        store.insert(
            [
                (uuid.UUID(int=n + 1).bytes, "k", T0 + n * MINUTE, T0, orjson.dumps({"p": f"/Item/{n % 4}"}).decode())
                for n in range(240)  # four hours, each value 15 times an hour
            ]
        )
        assert store.wait_backfilled(60)
        hours = EventFilter(since_us=T0, until_us=T0 + 4 * HOUR)
        search = replace(hours, where=(where_condition("data.p~item/1"),))
        assert store.bucket_counts([T0], T0 + 4 * HOUR, search, None) == [(60, None)]
        with psycopg.connect(pg_urls[0]) as connection:
            connection.execute("UPDATE property_counts SET count = count + 10 WHERE val IN ('/Item/1', '/Item/2')")
            # A question that names no key reads the counts summed over the keys (issue 21).
            connection.execute(
                "UPDATE property_counts_all_keys SET count = count + 10 WHERE val IN ('/Item/1', '/Item/2')"
            )
        assert store.bucket_counts([T0], T0 + 4 * HOUR, search, None) == [(100, None)]  # four hours, 10 more each
        edged = replace(search, since_us=T0 + 30 * MINUTE, until_us=T0 + HOUR)  # no whole hour: per event
        assert store.bucket_counts([T0], T0 + HOUR, edged, None) == [(7, None)]  # 33, 37, …, 57
    finally:
        store.close()
