"""What the PostgreSQL store does beyond the contract (test_store_contract.py runs that on it
too): several nodes on one database. Migrations from nodes starting at the same moment, the
same id written by two nodes at once, an erasure on one node covering what another node
received before it and writes after it, a database newer than the code, PostgreSQL going away
and coming back; and the same answers as the SQLite store for the same random data."""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import eventually
from tests.postgres_cluster import PostgresCluster, postgres_missing
from tlytics.errors import StoreError
from tlytics.ingest.filter_language import parse_value
from tlytics.store import EventFilter, SQLiteStore, StoreRow
from tlytics.store.postgres import SCHEMA_VERSION, PostgresReader, PostgresWriter, migrate_postgres

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z, µs
MINUTE = 60_000_000
_databases = itertools.count()


def now_us() -> int:
    return time.time_ns() // 1000


def row(n: int, ts: int = T0, *, key: str = "k", data: Any = None, received_at: int | None = None) -> StoreRow:
    data_json = orjson.dumps({"n": n} if data is None else data).decode()
    return (uuid.UUID(int=n).bytes, key, ts, ts if received_at is None else received_at, data_json)


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database's URL."""
    name = f"nodes_{next(_databases)}"
    url = postgres_cluster.create_database(name)
    yield url
    postgres_cluster.drop_database(name)


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    """Writers and readers the test opens, closed at its end."""
    stores: list[Any] = []
    yield stores
    for store in reversed(stores):
        store.close()


def test_nodes_starting_together_migrate_once(database: str) -> None:
    barrier = threading.Barrier(6, timeout=30)

    def start(_: int) -> None:
        barrier.wait()  # every node at the same moment
        migrate_postgres(database)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(start, range(6)))
    with psycopg.connect(database) as connection:
        assert connection.execute("SELECT version FROM tlytics_schema").fetchall() == [(SCHEMA_VERSION,)]
    migrate_postgres(database)  # and again: nothing to do


def test_a_database_newer_than_the_code_is_refused(database: str, opened: list[Any]) -> None:
    migrate_postgres(database)
    with psycopg.connect(database) as connection:
        connection.execute("UPDATE tlytics_schema SET version = version + 1")
    with pytest.raises(StoreError, match="newer than this Tlytics"):
        migrate_postgres(database)
    with pytest.raises(StoreError, match="newer than this Tlytics"):
        PostgresWriter(database, node="a")
    reader = PostgresReader(database)
    opened.append(reader)
    with pytest.raises(StoreError, match="schema version"):
        reader.count()


def test_a_node_name_is_short_and_plain(database: str) -> None:
    with pytest.raises(ValueError, match="node"):
        PostgresWriter(database, node="")
    with pytest.raises(ValueError, match="node"):
        PostgresWriter(database, node="a b")


def test_the_same_ids_from_two_nodes_at_once_are_stored_once(database: str, opened: list[Any]) -> None:
    writers = [PostgresWriter(database, node=name) for name in ("node-a", "node-b")]
    opened += writers
    # Both nodes get every event (a client retried against the other node), in batches of
    # overlapping ids in different orders, at the same time.
    events = [row(n, T0 + (n % 97) * MINUTE, key=f"key{n % 3}") for n in range(4000)]
    barrier = threading.Barrier(2, timeout=30)

    def write(node: int) -> int:
        shuffled = random.Random(node).sample(events, len(events))
        barrier.wait()
        return sum(writers[node].insert(shuffled[start : start + 250]) for start in range(0, len(shuffled), 250))

    with ThreadPoolExecutor(max_workers=2) as pool:
        inserted = list(pool.map(write, range(2)))
    assert sum(inserted) == 4000
    reader = PostgresReader(database)
    opened.append(reader)
    assert reader.count() == 4000 and reader.page(1, 1).total == 4000
    assert sorted((key, count) for key, count, _, _ in reader.keys_summary()) == [
        ("key0", 1334),
        ("key1", 1333),
        ("key2", 1333),
    ]
    ((whole_day, _),) = reader.bucket_counts([T0], T0 + 97 * MINUTE, EventFilter(), None)
    assert whole_day == 4000
    with psycopg.connect(database) as connection:
        per_node = dict(connection.execute("SELECT node, count FROM counters").fetchall())
    assert per_node == {"node-a": inserted[0], "node-b": inserted[1]}  # one row per node, no shared one


def test_an_erasure_on_one_node_covers_what_another_received_before_it(database: str, opened: list[Any]) -> None:
    node_a, node_b = PostgresWriter(database, node="a"), PostgresWriter(database, node="b")
    opened += [node_a, node_b]
    erased_user = EventFilter(where=(("user", parse_value("1")),))
    node_b.insert([row(1, data={"user": 1}), row(2, data={"user": 2})])  # written before the erasure
    received_before = now_us() - 1_000_000
    # Node B acknowledged these before the erasure, but writes them only after it.
    pending_on_b = [
        row(3, data={"user": 1}, received_at=received_before),
        row(4, data={"user": "1"}, received_at=received_before),  # the same user as a string
        row(5, data={"user": 2}, received_at=received_before),
    ]
    assert node_a.delete_matching(erased_user, max_rows=100, remember_ids=True) == 1
    received_after = now_us() + 1_000_000
    assert node_b.insert(pending_on_b) == 1  # only user 2
    assert node_b.insert([row(6, data={"user": 1}, received_at=received_after)]) == 1  # sent after: kept
    reader = PostgresReader(database)
    opened.append(reader)
    assert sorted(uuid.UUID(e.id).int for e in reader.page(1, 10).events) == [2, 5, 6]
    # The ids it refused are erased ids now: received again later, still not stored.
    assert node_b.insert([row(3, data={"user": 1}, received_at=received_after)]) == 0
    # Erasing again moves the same recorded erasure forward instead of adding one.
    assert node_a.delete_matching(erased_user, max_rows=100, remember_ids=True) == 1
    with psycopg.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM erasures").fetchone() == (1,)
    # Retention records nothing.
    node_a.delete_matching(EventFilter(until_us=T0 + 1), max_rows=100, remember_ids=False)
    with psycopg.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM erasures").fetchone() == (1,)


def test_an_erasure_racing_another_nodes_inserts_leaves_nothing_received_before_it(
    database: str, opened: list[Any]
) -> None:
    node_a, node_b = PostgresWriter(database, node="a"), PostgresWriter(database, node="b")
    opened += [node_a, node_b]
    erased = EventFilter(keys=("erase-me",))
    stop = threading.Event()
    inserted_batches = [0]

    def keep_inserting() -> None:
        for batch in itertools.count():
            if stop.is_set() or batch > 2000:
                return
            node_b.insert([row(batch * 10 + n, key="erase-me", received_at=now_us()) for n in range(10)])
            inserted_batches[0] = batch + 1

    with ThreadPoolExecutor(max_workers=1) as pool:
        inserting = pool.submit(keep_inserting)
        # The erasure starts while b inserts, and b goes on inserting after it.
        eventually(lambda: inserted_batches[0] >= 3, what="node b's first inserts")
        while node_a.delete_matching(erased, max_rows=50, remember_ids=True) == 50:
            pass
        inserted_after = inserted_batches[0] + 3
        eventually(lambda: inserted_batches[0] >= inserted_after or inserting.done(), what="node b's later inserts")
        stop.set()
        inserting.result()
    with psycopg.connect(database) as connection:
        ((made_at,),) = connection.execute("SELECT made_at FROM erasures").fetchall()
        (earliest_kept,) = connection.execute("SELECT min(received_at) FROM events").fetchone() or (None,)
    assert earliest_kept is None or earliest_kept >= made_at  # type: ignore[operator]


def test_an_event_with_a_nul_escape_does_not_break_filtered_reads(database: str, opened: list[Any]) -> None:
    writer, reader = PostgresWriter(database, node="a"), PostgresReader(database)
    opened += [writer, reader]
    nul = '{"name":"a\\u0000b","user":1}'
    writer.insert([(uuid.UUID(int=1).bytes, "k", T0, T0, nul), row(2, data={"user": 1, "name": "x"})])
    user_one = EventFilter(where=(("user", parse_value("1")),))
    assert reader.page(1, 10, where=user_one).total == 2
    assert reader.page(1, 10, ascending=True).events[0].data_json == nul  # stored as given
    assert reader.breakdown(EventFilter(), "name", 10).total == 2
    assert reader.bucket_counts([T0], T0 + MINUTE, EventFilter(), "name") == [(2, 2)]


def test_postgresql_going_away_is_a_store_error_and_coming_back_heals(opened: list[Any]) -> None:
    missing = postgres_missing()
    if missing is not None:
        pytest.skip(missing)
    cluster = PostgresCluster()  # its own: stopping the session's would disturb other tests
    try:
        cluster.start()
        writer, reader = PostgresWriter(cluster.url, node="a"), PostgresReader(cluster.url)
        opened += [writer, reader]
        assert writer.insert([row(1)]) == 1 and reader.count() == 1
        cluster.stop("immediate")
        with pytest.raises(StoreError, match="insert of 1 events failed"):
            writer.insert([row(2)])
        with pytest.raises(StoreError):
            reader.count()
        with pytest.raises(StoreError):
            writer.insert([row(2)])  # reconnecting fails too, as a StoreError
        cluster.start()
        assert writer.insert([row(2), row(1)]) == 1
        assert reader.count() == 2
    finally:
        cluster.remove()


# The same answers as SQLite, for random events and filters.

# Property values as JSON text: numbers spelt in every way SQLite tells apart or not.
_VALUES = st.sampled_from(
    [
        *("0", "1", "-1", "2", "1.0", "1.5", "-0.0", "1E2", "1e2", "100", "100000000000000000000"),
        *("9223372036854775807", "9223372036854775808", "9007199254740993", "9007199254740992.0"),
        *("true", "false", "null", '"1"', '"a"', '""', '"\\u00e9"', '"é"', '{"a":1}', "[1,2]", "[]", "{}"),
    ]
)
_FILTER_VALUES = st.sampled_from(
    [
        "1",
        "1.0",
        "0",
        "-1",
        "2",
        "1.5",
        "1e2",
        "100",
        "100000000000000000000",
        "true",
        "false",
        "null",
        '"1"',
        "a",
        '"a"',
        "é",
        "01",
    ]
)


@pytest.fixture(scope="module")
def twin_stores(postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """A SQLite store and a PostgreSQL store, emptied by each example."""
    name = f"twins_{next(_databases)}"
    url = postgres_cluster.create_database(name)
    sqlite = SQLiteStore(Path(tmp_path_factory.mktemp("twins")) / "twins.db")
    writer, reader = PostgresWriter(url, node="twin"), PostgresReader(url)
    yield [sqlite, writer, reader]
    reader.close()
    writer.close()
    sqlite.close()
    postgres_cluster.drop_database(name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.one_of(_VALUES, st.none()), min_size=1, max_size=25),
    match=_FILTER_VALUES,
    limit=st.integers(1, 4),
)
def test_postgresql_answers_as_sqlite_does(
    twin_stores: list[Any], values: list[str | None], match: str, limit: int
) -> None:
    sqlite, writer, reader = twin_stores
    everything = EventFilter(since_us=T0 - MINUTE)
    for store in (sqlite, writer):
        store.delete_matching(everything, max_rows=1000, remember_ids=False)
    rows = [
        (uuid.UUID(int=n).bytes, "k", T0 + n * MINUTE, T0, "{}" if v is None else f'{{"p":{v}}}')  # None: missing
        for n, v in enumerate(values)
    ]
    assert sqlite.insert(rows) == writer.insert(rows) == len(rows)
    matching = EventFilter(where=(("p", parse_value(match)),))
    for answer in (
        lambda store: [e.id for e in store.page(1, 100, where=matching).events],
        lambda store: store.bucket_counts([T0, T0 + 7 * MINUTE], T0 + 30 * MINUTE, EventFilter(), "p"),
        lambda store: store.bucket_counts([T0], T0 + 30 * MINUTE, matching, None),
        lambda store: store.breakdown(EventFilter(), "p", limit),
        lambda store: store.keys_summary(),
    ):
        assert answer(reader) == answer(sqlite)
