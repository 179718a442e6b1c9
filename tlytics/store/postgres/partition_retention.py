"""Retention's cheap path on PostgreSQL: a month partition entirely before the cutoff is
dropped whole (no row deleted one by one, nothing for VACUUM to reclaim), and what derives from
its events (rollups, key counts, this node's counter, sketches, the claimed ids) is taken away
by bucket, without reading the events: every 15-minute bucket of a month lies in that month.

The row-by-row deletion (tlytics.store.postgres.writes) then handles what remains before the
cutoff: the partition the cutoff cuts through, and the default partition's old events.
"""

from __future__ import annotations

from typing import cast

import structlog
from psycopg import errors

from tlytics.store.postgres.partitions import PARTITION_LOCK, existing_months, month_bounds_us, partition_name
from tlytics.store.postgres.preaggregates import drop_hours
from tlytics.store.postgres.schema import BUCKET_US, ERASURE_LOCK, Connection

log = structlog.get_logger("tlytics.store")

# How long a drop waits for the reads and inserts on `events` to let it take its lock (DROP
# of a partition locks the whole table); past it, this round deletes rows instead.
DROP_LOCK_TIMEOUT_MS = 3_000


def drop_expired_partitions(connection: Connection, cutoff_us: int, node: str) -> int:
    """Drop every month partition wholly before `cutoff_us`, each in one transaction; return
    how many events went with them. A partition whose lock cannot be had soon is left for the
    row-by-row path."""
    dropped = 0
    for year, month in sorted(existing_months(connection)):
        _, high = month_bounds_us(year, month)
        if high > cutoff_us:
            break
        try:
            dropped += _drop_partition(connection, year, month, node)
        except errors.LockNotAvailable:
            log.warning("partition_drop_postponed", partition=partition_name(year, month), reason="lock timeout")
            break
    return dropped


def _drop_partition(connection: Connection, year: int, month: int, node: str) -> int:
    low, high = month_bounds_us(year, month)
    first_bucket, end_bucket = low // BUCKET_US, high // BUCKET_US
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", (f"{DROP_LOCK_TIMEOUT_MS}ms",))
        # No insert (they hold this lock shared) moves the rollups while they are read here.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ERASURE_LOCK,))
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        name = partition_name(year, month)
        if cursor.execute("SELECT to_regclass(%s)", (name,)).fetchone() in (None, (None,)):
            return 0  # another node dropped it
        per_key = cursor.execute(
            "SELECT key, sum(count)::bigint FROM rollup_15m WHERE bucket >= %s AND bucket < %s"
            " GROUP BY key HAVING sum(count) <> 0",
            (first_bucket, end_bucket),
        ).fetchall()
        cursor.execute(f"DROP TABLE {name}")
        for table in ("rollup_15m", "sketch_15m", "sketch_15m_all_keys"):
            cursor.execute(f"DELETE FROM {table} WHERE bucket >= %s AND bucket < %s", (first_bucket, end_bucket))
        cursor.execute("DELETE FROM event_ids WHERE ts >= %s AND ts < %s", (low, high))
        cursor.execute(
            "DELETE FROM property_values WHERE property = ANY(ARRAY(SELECT number FROM declared_properties))"
            " AND ts >= %s AND ts < %s",
            (low, high),
        )
        drop_hours(cursor, low, high)  # a month is whole hours
        total = sum(cast(int, count) for _, count in per_key)
        # As a deletion does: this node's rows take the difference (another node's may have
        # counted these events; the sums stay right). A retention keeps key_stats' times.
        cursor.executemany(
            "INSERT INTO key_stats (key, node, count, first_ts, last_ts) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (key, node) DO UPDATE SET count = key_stats.count + excluded.count",
            [(key, node, -cast(int, count), low, high - 1) for key, count in per_key],
        )
        if total:
            cursor.execute(
                "INSERT INTO counters (node, count) VALUES (%s, %s)"
                " ON CONFLICT (node) DO UPDATE SET count = counters.count + excluded.count",
                (node, -total),
            )
    log.info("partition_dropped", partition=name, events=total)
    return total
