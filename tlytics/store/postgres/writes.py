"""The write side of the PostgreSQL store: inserts and deletions, each one transaction that
also keeps this node's counter and rollups in step with the events.

Each ingest node has its own writer, named by `node`: its counter row and rollup rows are its
own, so nodes never wait on one hot row; reads sum them. A batch is COPYed (binary) into a
temporary staging table; its ids are claimed in `event_ids` with `ON CONFLICT (id) DO NOTHING`
and only the claimed rows move into the month partitions of `events` (tlytics.store.postgres.
partitions: the partitions a batch needs are created first), and the rollups are built from
the rows that INSERT returned, so an id sent to two nodes, or again with another timestamp, is
stored and counted once. Inserts go in id order: two nodes inserting overlapping batches wait for each
other instead of deadlocking.

Erasure across nodes: an erasure records its filter and time in `erasures` under an exclusive
advisory lock; every insert takes that lock shared and first applies the erasures made after
its oldest row was received, so an event another node acknowledged before the erasure but
writes after it is never stored.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

import psycopg

from tlytics.errors import StoreError
from tlytics.store.base import EventFilter, StoreRow
from tlytics.store.postgres.connection import connect, describe, store_errors, unusable
from tlytics.store.postgres.declared import Backfill, add_inserted, declare
from tlytics.store.postgres.filters import filter_from_json, filter_to_json, sql_where
from tlytics.store.postgres.partition_retention import drop_expired_partitions
from tlytics.store.postgres.partitions import PartitionKeeper
from tlytics.store.postgres.preaggregates import UNCOUNTED_CTE
from tlytics.store.postgres.schema import BUCKET_SQL, BUCKET_US, ERASURE_LOCK, Connection, migrate_postgres
from tlytics.store.postgres.sketches import PostgresSketches

_NODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

_STAGING = (
    "CREATE TEMPORARY TABLE staging (id uuid NOT NULL, key text NOT NULL, ts bigint NOT NULL,"
    " received_at bigint NOT NULL, data text NOT NULL) ON COMMIT DELETE ROWS"
)
# The rows an insert stored (not the duplicates it skipped), for the sketches and the declared
# properties to read in the same transaction: no join back to `events` or `event_ids`, whose
# plan against the unanalyzed staging table PostgreSQL may get badly wrong.
_INSERTED_NOW = (
    "CREATE TEMPORARY TABLE inserted_now (id uuid NOT NULL, key text NOT NULL, ts bigint NOT NULL,"
    " data text NOT NULL) ON COMMIT DELETE ROWS"
)
_COPY = "COPY staging (id, key, ts, received_at, data) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ["uuid", "text", "int8", "int8", "text"]
# The erasures that may cover rows of this batch: those made after its oldest row was received.
_RELEVANT_ERASURES = "SELECT filter, made_at FROM erasures WHERE made_at > (SELECT min(received_at) FROM staging)"

# The new rows, and the rollups and this node's counter from them (the RETURNING rows: never
# a duplicate). Parameters: node, node, node.
_INSERT_NEW = f"""
WITH claimed AS (
    INSERT INTO event_ids (id, ts)
    SELECT id, ts FROM staging s
    WHERE NOT EXISTS (SELECT 1 FROM erased_ids e WHERE e.id = s.id)
    ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id, ts
), new AS (
    -- The claimed rows only: an id sent twice in one batch, with one timestamp or two, once.
    INSERT INTO events (id, key, ts, received_at, data)
    SELECT DISTINCT ON (s.id) s.id, s.key, s.ts, s.received_at, s.data
    FROM staging s JOIN claimed c ON c.id = s.id AND c.ts = s.ts
    ORDER BY s.id
    RETURNING id, key, ts, data
), kept AS (
    INSERT INTO inserted_now (id, key, ts, data) SELECT id, key, ts, data FROM new
), rolled AS (
    INSERT INTO rollup_15m (bucket, key, node, count)
    SELECT {BUCKET_SQL}, key, %s, count(*) FROM new GROUP BY 1, 2
    ON CONFLICT (bucket, key, node) DO UPDATE SET count = rollup_15m.count + excluded.count
), keyed AS (
    INSERT INTO key_stats (key, node, count, first_ts, last_ts)
    SELECT key, %s, count(*), min(ts), max(ts) FROM new GROUP BY key
    ON CONFLICT (key, node) DO UPDATE SET count = key_stats.count + excluded.count,
        first_ts = least(key_stats.first_ts, excluded.first_ts), last_ts = greatest(key_stats.last_ts, excluded.last_ts)
), counted AS (
    INSERT INTO counters (node, count) SELECT %s, count(*) FROM new HAVING count(*) > 0
    ON CONFLICT (node) DO UPDATE SET count = counters.count + excluded.count
)
SELECT count(*) FROM new
"""

# Deleted rows out of this node's rollups and counter (another node's rows may go negative
# there: the sums stay right). After an erasure, the first and last timestamps of key_stats
# become those of the remaining events (see _refresh_key_bounds), from the spans returned here.
_DELETE = """
WITH gone AS (
    DELETE FROM events WHERE (ts, id) IN (SELECT ts, id FROM events{where} LIMIT %s) RETURNING id, key, ts
), unclaimed AS (
    DELETE FROM event_ids WHERE id IN (SELECT id FROM gone)
), unvalued AS (
    DELETE FROM property_values WHERE (property, ts, id) IN
        (SELECT d.number, g.ts, g.id FROM gone g CROSS JOIN declared_properties d)
    RETURNING property, ts, id, kind, num, val
){uncounted}{remember}, rolled AS (
    INSERT INTO rollup_15m (bucket, key, node, count)
    SELECT {bucket}, key, %s, -count(*) FROM gone GROUP BY 1, 2
    ON CONFLICT (bucket, key, node) DO UPDATE SET count = rollup_15m.count + excluded.count
), keyed AS (
    INSERT INTO key_stats (key, node, count, first_ts, last_ts)
    SELECT key, %s, -count(*), min(ts), max(ts) FROM gone GROUP BY key
    ON CONFLICT (key, node) DO UPDATE SET count = key_stats.count + excluded.count
), counted AS (
    INSERT INTO counters (node, count) SELECT %s, -count(*) FROM gone HAVING count(*) > 0
    ON CONFLICT (node) DO UPDATE SET count = counters.count + excluded.count
)
SELECT count(*), min({bucket}), max({bucket}), jsonb_agg(DISTINCT jsonb_build_array({bucket}, key)),
    (SELECT jsonb_agg(jsonb_build_array(key, first_ts, last_ts))
     FROM (SELECT key, min(ts) AS first_ts, max(ts) AS last_ts FROM gone GROUP BY key) spans)
FROM gone
"""
# The first or last 15-minute bucket in which a key still has events (every node's rows summed).
_REMAINING_BUCKET = (
    "SELECT {which}(bucket) FROM (SELECT bucket FROM rollup_15m WHERE key = %s GROUP BY bucket"
    " HAVING sum(count) > 0) counted"
)
_REMEMBER = ", remembered AS (INSERT INTO erased_ids (id) SELECT id FROM gone ON CONFLICT DO NOTHING)"


class PostgresWriter:
    """The write side of the store on one PostgreSQL database, for the ingest node `node` (a
    short name that stays the same across restarts: its counter and rollup rows). Opening it
    runs the migrations; the connection is opened on first use and again after it broke."""

    def __init__(
        self,
        url: str,
        *,
        node: str,
        unique_properties: Sequence[str] | None = None,
        declared_properties: Sequence[str] | None = None,
    ) -> None:
        if not _NODE.match(node):
            raise ValueError(f"node must be 1-64 letters, digits or _.:- (got {node!r})")
        self.url = url
        self.node = node
        self._where = describe(url)
        self._connection: Connection | None = None
        self._partitions = PartitionKeeper()
        migrate_postgres(url)
        # HyperLogLog sketches: --unique-property's are backfilled on first use if new.
        self._sketches = PostgresSketches(node, unique_properties)
        # The typed values of --property's properties (a new one backfills on a thread).
        self._backfill: Backfill | None = None
        with store_errors(f"declaring properties in {self._where}"), connect(url, application="tlytics-declare") as c:
            if declare(c, declared_properties, ERASURE_LOCK):
                self._backfill = Backfill(url, ERASURE_LOCK)

    def _writing(self) -> Connection:
        """The write connection, (re)opened when needed, with its staging table."""
        if self._connection is not None and unusable(self._connection):
            self._discard()
        if self._connection is None:
            with store_errors(f"opening store {self._where}"):
                connection = connect(self.url, application=f"tlytics-writer {self.node}")
                try:
                    # Commit only once the WAL is on disk, whatever the server's default.
                    connection.execute("SET synchronous_commit = on")
                    connection.execute(_STAGING)
                    connection.execute(_INSERTED_NOW)
                except BaseException:
                    connection.close()
                    raise
            self._connection = connection
        return self._connection

    def _discard(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except psycopg.Error:
                pass  # it is broken already
            self._connection = None

    def insert(self, rows: Sequence[StoreRow]) -> int:
        if not rows:
            return 0
        connection = self._writing()
        try:
            with store_errors("backfilling sketches"):
                self._sketches.backfill_declared(connection)
            with store_errors("creating partitions"):
                timestamps = [row[2] for row in rows]
                self._partitions.ensure(connection, min(timestamps), max(timestamps), _now_us())
            with store_errors(f"insert of {len(rows)} events"), connection.transaction(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ERASURE_LOCK,))
                with cursor.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for event_id, key, timestamp_us, received_at_us, data in rows:
                        copy.write_row((uuid.UUID(bytes=event_id), key, timestamp_us, received_at_us, data))
                for recorded, made_at_us in cursor.execute(_RELEVANT_ERASURES).fetchall():
                    # Rows received before the erasure that it matches: erased, so not stored.
                    covered = sql_where(filter_from_json(cast(str, recorded)), table="s").and_also(
                        "s.received_at < %s", made_at_us
                    )
                    cursor.execute(
                        f"INSERT INTO erased_ids (id) SELECT s.id FROM staging s{covered.sql} ON CONFLICT DO NOTHING",
                        covered.params,
                    )
                cursor.execute(_INSERT_NEW, (self.node, self.node, self.node))
                inserted = cursor.fetchone()
                add_inserted(cursor, self.node)
                self._sketches.add_inserted(cursor)
        except StoreError:
            if unusable(connection):
                self._discard()
            raise
        assert inserted is not None  # an aggregate always answers one row
        return cast(int, inserted[0])

    def delete_matching(self, where: EventFilter, *, max_rows: int, remember_ids: bool) -> int:
        """Delete up to `max_rows` matching events in one transaction; return how many.

        With `remember_ids` (erasure), their ids are kept so they are never stored again, and
        the erasure itself is recorded (even when nothing matched here yet), so that every
        node's writer applies it to the events it received before now and writes later.
        """
        matching = sql_where(where)
        connection = self._writing()
        dropped = 0
        if not remember_ids and where == EventFilter(until_us=where.until_us) and where.until_us is not None:
            # Retention: whole month partitions before the cutoff go at once.
            try:
                with store_errors("dropping expired partitions"):
                    dropped = drop_expired_partitions(connection, where.until_us, self.node)
            except StoreError:
                if unusable(connection):
                    self._discard()
                raise
            if dropped:
                self._partitions.forget()
                return dropped
        try:
            with (
                store_errors(f"delete of up to {max_rows} events"),
                connection.transaction(),
                connection.cursor() as cursor,
            ):
                # Shared by retention: no backfill chunk (exclusive) adds values meanwhile.
                cursor.execute(f"SELECT pg_advisory_xact_lock{'' if remember_ids else '_shared'}(%s)", (ERASURE_LOCK,))
                if remember_ids:
                    # One row per filter: erasing again only moves its time forward.
                    cursor.execute(
                        f"INSERT INTO erasures (filter, made_at) VALUES (%s, {_NOW_US}) ON CONFLICT (filter)"
                        " DO UPDATE SET made_at = greatest(erasures.made_at, excluded.made_at)",
                        (filter_to_json(where),),
                    )
                query = _DELETE.format(
                    where=matching.sql,
                    uncounted=UNCOUNTED_CTE,
                    remember=_REMEMBER if remember_ids else "",
                    bucket=BUCKET_SQL,
                )
                # Every parameter after the limit is this node (two in `uncounted`, three after it).
                cursor.execute(query, (*matching.params, max_rows, *[self.node] * 5))
                deleted, first_bucket, last_bucket, touched, spans = cursor.fetchone() or (0, None, None, None, None)
                if deleted:
                    self._sketches.rebuild(cursor, cast(list[list[Any]], touched or []))  # a sketch cannot forget
                    if remember_ids:
                        _refresh_key_bounds(cursor, cast(list[list[Any]], spans or []))
                    cursor.execute(
                        "DELETE FROM rollup_15m WHERE node = %s AND count = 0 AND bucket BETWEEN %s AND %s",
                        (self.node, first_bucket, last_bucket),
                    )
        except StoreError:
            if unusable(connection):
                self._discard()
            raise
        return cast(int, deleted)

    def wait_backfilled(self, timeout_s: float) -> bool:
        """Whether the declared properties' backfill finished within `timeout_s` (tools, tests)."""
        return self._backfill is None or self._backfill.wait(timeout_s)

    def close(self) -> None:
        if self._backfill is not None:
            self._backfill.close()
        self._discard()


def _now_us() -> int:
    return time.time_ns() // 1000


def _refresh_key_bounds(cursor: psycopg.Cursor[tuple[Any, ...]], spans: Sequence[Sequence[Any]]) -> None:
    """After an erasure, the first and last timestamps of each key it deleted from (`spans`:
    key, first and last erased timestamp): those of the remaining events, in every node's row
    (/keys must not keep a time only erased events had; a retention keeps them). Read only when a deleted event held
    one, from the first or last bucket the rollups still count; under the erasure lock, so no
    node's insert moves them meanwhile."""
    if not spans:
        return
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ERASURE_LOCK,))
    for key, deleted_first, deleted_last in spans:
        row = cursor.execute(
            "SELECT coalesce(sum(count), 0), min(first_ts), max(last_ts) FROM key_stats WHERE key = %s", (key,)
        ).fetchone()
        assert row is not None  # an aggregate always answers one row
        count, first, last = row
        if cast(int, count) <= 0:
            cursor.execute("DELETE FROM key_stats WHERE key = %s", (key,))
            continue
        if deleted_first <= cast(int, first):
            first = _remaining_bound(cursor, key, "min")
        if deleted_last >= cast(int, last):
            last = _remaining_bound(cursor, key, "max")
        cursor.execute("UPDATE key_stats SET first_ts = %s, last_ts = %s WHERE key = %s", (first, last, key))


def _remaining_bound(cursor: psycopg.Cursor[tuple[Any, ...]], key: str, which: str) -> int:
    """min or max(ts) of the stored events of `key` (at least one remains)."""
    found = cursor.execute(_REMAINING_BUCKET.format(which=which), (key,)).fetchone()
    assert found is not None and found[0] is not None
    bucket = cast(int, found[0])
    bound = cursor.execute(
        f"SELECT {which}(ts) FROM events WHERE key = %s AND ts >= %s AND ts < %s",
        (key, bucket * BUCKET_US, (bucket + 1) * BUCKET_US),
    ).fetchone()
    assert bound is not None
    return cast(int, bound[0])
