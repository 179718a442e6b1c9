"""The PostgreSQL store's events, partitioned by month of their timestamp: the partitions a
writer creates (ahead of time, and on demand for the months of a batch near now), the default
partition that takes every other event (so no insert ever fails for want of a partition), and
migration 6, which moves an unpartitioned `events` table into this shape.

Why months: retention drops a partition once all of it is past the cutoff and deletes rows only
in the one partition it cuts through, so a partition is the grain of retention's cheap path; a
month keeps that grain fine enough for any retention of a few months or more, and keeps the
count of partitions (each costs planning time for a read over all time) to a dozen a year.
Events far from now (a replay of years-old data, a clock in 2200) go to `events_other`, the
default partition, instead of one partition per month they happen to name: the contract
accepts any timestamp from year 1 to 9999, and a partition per stray month would let a few
odd events cost every read its planning time.

An id is unique across partitions through `event_ids (id PRIMARY KEY, ts)`: PostgreSQL's
unique indexes on a partitioned table must include the partition key, so (ts, id) alone would
store an id sent again with another timestamp twice. An insert claims its ids there first
(`ON CONFLICT (id) DO NOTHING`, which also makes two nodes inserting the same id wait for each
other), and only the rows it claimed go into `events`.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

import psycopg
import structlog
from psycopg import errors

log = structlog.get_logger("tlytics.store")

Connection = psycopg.Connection[tuple[object, ...]]
Cursor = psycopg.Cursor[tuple[object, ...]]

# pg_advisory_xact_lock key ("tlyt" and a number) of partition changes: one node at a time
# creates or drops partitions.
PARTITION_LOCK = 0x746C_7974_0000_0003
DEFAULT_PARTITION = "events_other"
# Months around now that get a partition of their own when a batch holds events in them.
MONTHS_BEHIND = 24
MONTHS_AHEAD = 3
CREATE_LOCK_TIMEOUT_MS = 3_000
_PARTITION_NAME = re.compile(r"events_y([0-9]{4})m([0-9]{2})\Z")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

# The partitioned events, and the ids that make an id unique across partitions. Every stored
# event has its id in event_ids with the same ts (kept in the same transactions), so a
# partition's ids are found by its time range: a BRIN index on event_ids.ts (its rows come
# mostly in time order, and a BRIN costs next to nothing per insert) serves retention.
_CREATE_PARTITIONED = f"""
CREATE TABLE events (
    id uuid NOT NULL,
    key text COLLATE "C" NOT NULL,
    ts bigint NOT NULL,
    received_at bigint NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (ts, id)
) PARTITION BY RANGE (ts);
CREATE TABLE {DEFAULT_PARTITION} PARTITION OF events DEFAULT;
CREATE TABLE event_ids (id uuid PRIMARY KEY, ts bigint NOT NULL);
"""


def month_of(timestamp_us: int) -> tuple[int, int]:
    """The (year, month) in UTC of a timestamp (years 1-9999, as the contract's timestamps)."""
    moment = _EPOCH + datetime.timedelta(microseconds=timestamp_us)
    return moment.year, moment.month


def month_bounds_us(year: int, month: int) -> tuple[int, int]:
    """The first microsecond of the month, and that of the next (a partition's range)."""
    start = datetime.datetime(year, month, 1, tzinfo=datetime.UTC)
    following = datetime.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=datetime.UTC)
    return _micros(start), _micros(following)


def _micros(moment: datetime.datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _shifted(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def months_worth_a_partition(timestamps_us: Iterable[int], now_us: int) -> set[tuple[int, int]]:
    """The months a partition should exist for: this month and the next (ahead of the
    writes), and those of `timestamps_us` within MONTHS_BEHIND / MONTHS_AHEAD of now."""
    current = month_of(now_us)
    low, high = _shifted(*current, -MONTHS_BEHIND), _shifted(*current, MONTHS_AHEAD)
    wanted = {current, _shifted(*current, 1)}
    wanted.update(month for month in {month_of(ts) for ts in timestamps_us} if low <= month <= high)
    return wanted


def months_spanned(first_us: int, last_us: int, now_us: int) -> set[tuple[int, int]]:
    """months_worth_a_partition for every month from that of `first_us` to that of `last_us`
    (a batch's oldest and newest events: two datetime conversions, not one per event)."""
    current = month_of(now_us)
    low = max(month_of(first_us), _shifted(*current, -MONTHS_BEHIND))
    high = min(month_of(last_us), _shifted(*current, MONTHS_AHEAD))
    wanted = {current, _shifted(*current, 1)}
    while low <= high:
        wanted.add(low)
        low = _shifted(*low, 1)
    return wanted


class PartitionKeeper:
    """A writer's view of the partitions: the months it knows have one, read once, and the
    creation of those a batch needs (a dictionary look-up per batch when they exist)."""

    def __init__(self) -> None:
        self._known: set[tuple[int, int]] | None = None

    def ensure(self, connection: Connection, first_us: int, last_us: int, now_us: int) -> None:
        """Make sure the months a batch of events from `first_us` to `last_us` needs have
        their partitions (outside the insert's transaction: DDL of its own, short)."""
        wanted = months_spanned(first_us, last_us, now_us)
        if self._known is None:
            self._known = existing_months(connection)
        if not wanted <= self._known:
            try:
                self._known = create_partitions(connection, wanted)
            except errors.LockNotAvailable:
                # Reads held the default partition: this batch's events go there (where any
                # partition made later finds them), the next batch tries again.
                log.warning("partition_creation_postponed", reason="lock timeout")

    def forget(self) -> None:
        """Read the partitions again before the next batch (retention dropped some)."""
        self._known = None


def partition_name(year: int, month: int) -> str:
    return f"events_y{year:04d}m{month:02d}"


def existing_months(connection: Connection | Cursor) -> set[tuple[int, int]]:
    """The months that have a partition of their own."""
    rows = connection.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass"
    ).fetchall()
    found = set()
    for (name,) in rows:
        matched = _PARTITION_NAME.match(str(name))
        if matched:
            found.add((int(matched[1]), int(matched[2])))
    return found


def create_partitions(connection: Connection, months: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """Create the partitions of `months` that do not exist yet, in one transaction under the
    partition lock (nodes may race for the same month); return every month that now has one.

    A partition is made as a table of its own, filled with the rows of its month that the
    default partition held, then attached with a CHECK constraint that spares PostgreSQL the
    scan to validate it: ATTACH takes only a SHARE UPDATE EXCLUSIVE lock on `events`, so
    reads and other nodes' inserts go on (CREATE TABLE ... PARTITION OF would lock them out).
    """
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        # ATTACH locks the default partition, which every read over all time scans: never wait
        # long behind one (nor make reads queue behind the waiting ATTACH).
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", (f"{CREATE_LOCK_TIMEOUT_MS}ms",))
        have = existing_months(cursor)
        for year, month in sorted(set(months) - have):
            _create_partition(cursor, year, month)
            have.add((year, month))
        return have


def _create_partition(cursor: Cursor, year: int, month: int) -> None:
    name = partition_name(year, month)
    low, high = month_bounds_us(year, month)
    in_range = f"ts >= {low} AND ts < {high}"
    cursor.execute(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS, CONSTRAINT {name}_range CHECK ({in_range}))")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE {in_range} RETURNING *)"
        f" INSERT INTO {name} SELECT * FROM moved"
    )
    cursor.execute(f"ALTER TABLE {name} ADD PRIMARY KEY (ts, id)")
    cursor.execute(f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})")
    # The CHECK only served the attach; the partition bound says the same from now on.
    cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")


def partition_events(connection: Connection) -> None:
    """Migration 6: `events` partitioned by month, its ids in `event_ids`; every event kept as
    it was (same id, key, ts, received_at, data)."""
    connection.execute("ALTER TABLE events RENAME TO events_unpartitioned")
    connection.execute("ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey")
    connection.execute("DROP INDEX events_by_time")
    connection.execute(_CREATE_PARTITIONED)
    connection.execute("INSERT INTO event_ids (id, ts) SELECT id, ts FROM events_unpartitioned")
    connection.execute("CREATE INDEX event_ids_by_time ON event_ids USING brin (ts)")
    stored_months = connection.execute(
        # Days (floored, before 1970 too): few rows, made months in Python.
        "SELECT DISTINCT ts / 86400000000 - (ts < 0 AND mod(ts, 86400000000) <> 0)::int FROM events_unpartitioned"
    ).fetchall()
    now_row = connection.execute("SELECT (extract(epoch FROM now()) * 1000000)::bigint").fetchone()
    assert now_row is not None
    days = [int(str(day)) * 86_400_000_000 for (day,) in stored_months]
    wanted = months_worth_a_partition(days, int(str(now_row[0])))
    with connection.cursor() as cursor:
        for year, month in sorted(wanted):
            _create_partition(cursor, year, month)
    connection.execute(
        "INSERT INTO events (id, key, ts, received_at, data)"
        " SELECT id, key, ts, received_at, data FROM events_unpartitioned"
    )
    connection.execute("DROP TABLE events_unpartitioned")
