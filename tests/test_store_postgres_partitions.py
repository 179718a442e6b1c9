"""The PostgreSQL store's events partitioned by month (tlytics.store.postgres.partitions): no
insert fails for want of a partition (1970, 2200, a month created after its events arrived),
an id is stored once across partitions however it is sent again, retention drops whole
partitions and keeps every count exact, and migration 6 moves an unpartitioned store over
with every event as it was."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import psycopg
import pytest

from tests.postgres_cluster import PostgresCluster
from tlytics.store import EventFilter, StoreRow
from tlytics.store.postgres import SCHEMA_VERSION, PostgresReader, PostgresWriter, migrate_postgres
from tlytics.store.postgres.partitions import (
    DEFAULT_PARTITION,
    create_partitions,
    month_bounds_us,
    month_of,
    partition_name,
)
from tlytics.store.postgres.schema import MIGRATIONS

DAY = 86_400_000_000
Y1970 = 1_000_000  # 1970-01-01T00:00:01Z
Y2200 = 7_258_118_400_000_000  # 2200-01-01T00:00:00Z
_databases = itertools.count()


def now_us() -> int:
    return time.time_ns() // 1000


def row(n: int, ts: int, *, key: str = "k", data: Any = None) -> StoreRow:
    data_json = orjson.dumps({"n": n} if data is None else data).decode()
    return (uuid.UUID(int=n).bytes, key, ts, ts, data_json)


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = f"partitions_{next(_databases)}"
    url = postgres_cluster.create_database(name)
    yield url
    postgres_cluster.drop_database(name)


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    stores: list[Any] = []
    yield stores
    for store in reversed(stores):
        store.close()


def stored(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT id, key, ts, received_at, data FROM events ORDER BY id").fetchall()


def partitions(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass"
        ).fetchall()
    return {str(name) for (name,) in rows}


def months_ago(months: int) -> tuple[int, int]:
    year, month = month_of(now_us())
    index = year * 12 + month - 1 - months
    return index // 12, index % 12 + 1


def test_events_in_1970_2200_and_every_partition_are_stored_and_read(database: str, opened: list[Any]) -> None:
    writer = PostgresWriter(database, node="a")
    reader = PostgresReader(database)
    opened += [writer, reader]
    now = now_us()
    rows = [row(1, Y1970), row(2, Y2200), row(3, now), row(4, now - 40 * DAY), row(5, -5 * DAY)]
    assert writer.insert(rows) == 5
    assert reader.count() == 5
    page = reader.page(1, 10)
    assert [event.timestamp_us for event in page.events] == sorted((r[2] for r in rows), reverse=True)
    assert reader.page(1, 10, where=EventFilter(until_us=Y1970 + 1)).total == 2
    # 1970, 2200 and the year before 1970 are far from now: the default partition holds them.
    with psycopg.connect(database) as connection:
        far = connection.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}").fetchone()
    assert far == (3,)
    assert partition_name(*month_of(now)) in partitions(database)
    assert partition_name(*month_of(now - 40 * DAY)) in partitions(database)


def test_a_partition_created_after_its_events_arrived_takes_them_from_the_default(
    database: str, opened: list[Any]
) -> None:
    writer = PostgresWriter(database, node="a")
    reader = PostgresReader(database)
    opened += [writer, reader]
    far_month = months_ago(-8)  # beyond the months made on demand: the default partition's
    low, high = month_bounds_us(*far_month)
    assert writer.insert([row(n, low + n * DAY) for n in range(1, 6)] + [row(9, high)]) == 6
    assert partition_name(*far_month) not in partitions(database)
    with psycopg.connect(database, autocommit=True) as connection:
        create_partitions(connection, [far_month])
        in_default = connection.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}").fetchone()
        in_partition = connection.execute(f"SELECT count(*) FROM {partition_name(*far_month)}").fetchone()
    assert (in_default, in_partition) == ((1,), (5,))
    assert reader.count() == 6 and reader.page(1, 10).total == 6
    assert writer.insert([row(10, low + 7 * DAY)]) == 1  # and the new partition takes new ones
    assert reader.page(1, 10, where=EventFilter(since_us=low, until_us=high)).total == 6


def test_the_same_id_sent_again_with_the_same_or_another_timestamp_is_stored_once(
    database: str, opened: list[Any]
) -> None:
    writer = PostgresWriter(database, node="a")
    reader = PostgresReader(database)
    opened += [writer, reader]
    now = now_us()
    first = row(1, now, data={"first": True})
    assert writer.insert([first]) == 1
    assert writer.insert([row(1, now, data={"again": 1})]) == 0  # same timestamp
    assert writer.insert([row(1, now - 60 * DAY, data={"again": 2})]) == 0  # another partition
    assert writer.insert([row(1, Y2200, data={"again": 3})]) == 0  # the default partition
    # Twice in one batch, with two timestamps: once.
    assert writer.insert([row(2, now), row(2, now - 90 * DAY), row(2, now)]) == 1
    assert reader.count() == 2
    assert len(stored(database)) == 2
    assert stored(database)[0][4] == orjson.dumps({"first": True}).decode()
    assert reader.existing_ids([uuid.UUID(int=1).bytes, uuid.UUID(int=3).bytes]) == {uuid.UUID(int=1).bytes}


def test_the_same_ids_with_other_timestamps_from_two_nodes_at_once_are_stored_once(
    database: str, opened: list[Any]
) -> None:
    writers = [PostgresWriter(database, node=name) for name in ("node-a", "node-b")]
    reader = PostgresReader(database)
    opened += [*writers, reader]
    now = now_us()
    barrier = threading.Barrier(2, timeout=30)

    def write(node: int) -> int:
        # Each node has every id, with timestamps of its own (months apart).
        events = [row(n, now - (node * 35 + n % 3) * DAY) for n in range(1, 1201)]
        barrier.wait()
        return sum(writers[node].insert(events[start : start + 200]) for start in range(0, len(events), 200))

    with ThreadPoolExecutor(max_workers=2) as pool:
        inserted = list(pool.map(write, range(2)))
    assert sum(inserted) == 1200
    assert reader.count() == 1200 and len(stored(database)) == 1200
    with psycopg.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM event_ids").fetchone() == (1200,)


def test_retention_drops_whole_partitions_and_deletes_rows_only_in_the_edge(database: str, opened: list[Any]) -> None:
    writer = PostgresWriter(database, node="a")
    reader = PostgresReader(database)
    opened += [writer, reader]
    old_month, edge_month = months_ago(3), months_ago(2)
    old_low, _ = month_bounds_us(*old_month)
    edge_low, edge_high = month_bounds_us(*edge_month)
    now = now_us()
    rows = [row(n, old_low + n * DAY, key="old") for n in range(1, 11)]
    rows += [row(100 + n, edge_low + n * DAY, key="edge") for n in range(0, 20)]
    rows += [row(200, now, key="new"), row(201, Y1970, key="far")]
    assert writer.insert(rows) == 32
    assert partition_name(*old_month) in partitions(database)
    cutoff = edge_low + 10 * DAY  # cuts the edge month: 10 of its 20 events go
    deleted = 0
    for _ in range(100):  # as the retention loop does, a chunk at a time
        chunk = writer.delete_matching(EventFilter(until_us=cutoff), max_rows=4, remember_ids=False)
        deleted += chunk
        if chunk == 0:
            break
    assert deleted == 10 + 10 + 1
    assert partition_name(*old_month) not in partitions(database)  # dropped whole
    assert partition_name(*edge_month) in partitions(database)
    assert reader.count() == 11 and reader.page(1, 50).total == 11
    assert {key: count for key, count, _, _ in reader.keys_summary()} == {"edge": 10, "new": 1}
    counts = reader.bucket_counts([old_low, edge_low, edge_high], now + 1, EventFilter(), None)
    assert [n for n, _ in counts] == [0, 10, 1]
    with psycopg.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM event_ids").fetchone() == (11,)
        assert connection.execute("SELECT count(*) FROM rollup_15m WHERE key = 'old'").fetchone() == (0,)
    # An id retention removed is a new event when it comes again (as before partitions).
    assert writer.insert([row(1, now)]) == 1


def _migrate_to(url: str, done: int, version: int) -> None:
    """Run the migrations after `done` up to `version`, as a Tlytics of that version would."""
    with psycopg.connect(url, autocommit=True) as connection:
        if done == 0:
            connection.execute("CREATE TABLE tlytics_schema (version integer NOT NULL)")
            connection.execute("INSERT INTO tlytics_schema (version) VALUES (0)")
        for number, migration in enumerate(MIGRATIONS[done:version], start=done + 1):
            with connection.transaction():
                if isinstance(migration, str):
                    connection.execute(migration)
                else:
                    migration(connection)  # type: ignore[arg-type]
                connection.execute("UPDATE tlytics_schema SET version = %s", (number,))


def test_migrating_an_unpartitioned_store_keeps_every_event_and_runs_once(database: str, opened: list[Any]) -> None:
    _migrate_to(database, 0, 1)  # the bare events: a bulk load, then Tlytics 5 derived the rest
    now = now_us()
    timestamps = [Y1970, Y2200, now, now - 45 * DAY, now - 400 * DAY, -7 * DAY, now + 20 * DAY]
    with psycopg.connect(database) as connection, connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO events (id, key, ts, received_at, data) VALUES (%s, %s, %s, %s, %s)",
            [(uuid.uuid4(), f"k{n % 3}", ts + n, ts, f'{{"n":{n}}}') for n, ts in enumerate(timestamps * 30)],
        )
    _migrate_to(database, 1, 5)
    before = stored(database)
    migrate_postgres(database)
    assert stored(database) == before
    with psycopg.connect(database) as connection:
        assert connection.execute("SELECT version FROM tlytics_schema").fetchone() == (SCHEMA_VERSION,)
        assert connection.execute("SELECT count(*) FROM event_ids").fetchone() == (len(before),)
        kind = connection.execute("SELECT relkind FROM pg_class WHERE relname = 'events'").fetchone()
    assert kind == ("p",)  # partitioned
    shape = partitions(database)
    migrate_postgres(database)  # again: nothing to do
    assert stored(database) == before and partitions(database) == shape
    writer = PostgresWriter(database, node="a")
    reader = PostgresReader(database)
    opened += [writer, reader]
    assert writer.insert([row(1, now)]) == 1
    assert reader.count() == len(before) + 1
    assert writer.insert([(before[0][0].bytes, "k0", now, now, "{}")]) == 0  # a migrated id stays unique


def test_a_read_holding_the_default_partition_postpones_a_partition_not_the_insert(
    database: str, opened: list[Any]
) -> None:
    writer = PostgresWriter(database, node="a")
    opened.append(writer)
    month = months_ago(5)
    low, _ = month_bounds_us(*month)
    with psycopg.connect(database) as holding:
        holding.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}")  # its transaction stays open
        started = time.monotonic()
        assert writer.insert([row(1, low + DAY)]) == 1  # after the lock timeout, into the default
        assert time.monotonic() - started < 60
        assert partition_name(*month) not in partitions(database)
    assert writer.insert([row(2, low + 2 * DAY)]) == 1  # the read is over: the partition is made
    assert partition_name(*month) in partitions(database)
    with psycopg.connect(database) as connection:
        assert connection.execute(f"SELECT count(*) FROM {partition_name(*month)}").fetchone() == (2,)
