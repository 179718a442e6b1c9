"""The PostgreSQL store's HyperLogLog sketches (see tlytics.store.sketch) of the properties
declared with `--unique-property`, as in SQLite (tlytics.store.sqlite.sketches) but per node:
each node's writer merges into rows of its own, so two nodes never contend on one row, and
reads merge every node's rows.

`sketched_properties` is shared: every node's writer keeps the sketches of every property
listed there (read in each insert's transaction), whatever its own settings, so a node
started before another declared a property still feeds it. A node whose settings declare a
property that is not listed backfills it under the erasure lock (inserts of every node wait
meanwhile) and lists it. A property is never dropped by a node that does not declare it (its
neighbour may): `DELETE FROM sketched_properties WHERE path = '…'` makes it exact again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, cast

import psycopg
import structlog

from tlytics.store.base import EventFilter, UniqueCounts
from tlytics.store.postgres.declared_reads import complete_properties
from tlytics.store.postgres.filters import property_value, sql_where
from tlytics.store.postgres.schema import BUCKET_SQL, BUCKET_US, ERASURE_LOCK
from tlytics.store.sketch import (
    EXACT_UNIQUE_MAX_EVENTS,
    REGISTERS,
    RELATIVE_ERROR,
    Union,
    add_hashes,
    decode,
    encode,
    unique_counts_in_range,
    value_hash,
)
from tlytics.timefmt import MAX_US, MIN_US

log = structlog.get_logger("tlytics.store")

Cursor = psycopg.Cursor[tuple[Any, ...]]
_BACKFILL_CHUNK = 50_000  # events fetched and hashed at a time
_WRITE_EVERY = 1_000  # (bucket, key) sketches written at a time
# (bucket, key) pairs a deletion removed events from.
BucketKeys = set[tuple[int, str]]


def _value_key(path: str) -> tuple[str, list[Any]]:
    """SQL for a property's value key (as the exact count compares values), and its parameters."""
    value, params = property_value(path)
    return f"tlytics_value_key({value})", params


def _grouped(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[int, str], list[int]]:
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for bucket, key, value_key in rows:
        hashed = value_hash(value_key)
        if hashed is not None:
            groups[(int(bucket), str(key))].append(hashed)
    return groups


def _registers(hashes: Iterable[int], blob: bytes | None = None) -> bytearray:
    """The registers of sketch `blob` (or empty ones) with `hashes` added."""
    registers = bytearray(decode(blob) if blob is not None else REGISTERS)
    add_hashes(registers, hashes)
    return registers


def sketched_paths(cursor: Cursor) -> list[str]:
    return [str(row[0]) for row in cursor.execute("SELECT path FROM sketched_properties").fetchall()]


class PostgresSketches:
    """A node's writer side of the sketches."""

    def __init__(self, node: str, declared: Sequence[str] | None) -> None:
        self.node = node
        self._to_backfill = list(dict.fromkeys(declared or ()))

    def backfill_declared(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Backfill the declared properties not listed yet, one transaction each (once per writer)."""
        while self._to_backfill:
            path = self._to_backfill[0]
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ERASURE_LOCK,))
                if path not in sketched_paths(cursor):
                    log.info("sketch_backfill_started", property=f"data.{path}")
                    for table in ("sketch_15m", "sketch_15m_all_keys"):
                        cursor.execute(f"DELETE FROM {table} WHERE path = %s", (path,))
                    self._backfill(connection, cursor, path)
                    cursor.execute("INSERT INTO sketched_properties (path) VALUES (%s)", (path,))
                    log.info("sketch_backfill_done", property=f"data.{path}")
            self._to_backfill.pop(0)

    def _backfill(self, connection: psycopg.Connection[tuple[Any, ...]], cursor: Cursor, path: str) -> None:
        """Sketch every event, in time order through a server-side cursor: one bucket's values
        in memory at a time, and its rows (none exist: deleted above, inserts held off by the
        lock) written in batches."""
        value_key, params = _value_key(path)
        pending: list[tuple[int, str, list[int]]] = []

        def write() -> None:
            # A (bucket, key) may come in two chunks: one row of both.
            merged: dict[tuple[int, str], list[int]] = defaultdict(list)
            all_keys: dict[int, list[int]] = defaultdict(list)
            for bucket, key, hashes in pending:
                merged[(bucket, key)].extend(hashes)
                all_keys[bucket].extend(hashes)
            per_key = [
                (path, bucket, key, self.node, encode(_registers(hashes))) for (bucket, key), hashes in merged.items()
            ]
            cursor.executemany(
                "INSERT INTO sketch_15m (path, bucket, key, node, registers) VALUES (%s, %s, %s, %s, %s)", per_key
            )
            cursor.executemany(
                "INSERT INTO sketch_15m_all_keys (path, bucket, node, registers) VALUES (%s, %s, %s, %s)",
                [(path, bucket, self.node, encode(_registers(hashes))) for bucket, hashes in all_keys.items()],
            )
            pending.clear()

        with connection.cursor(name="tlytics_sketch_backfill") as events:
            events.execute(f"SELECT {BUCKET_SQL}, key, {value_key} FROM events ORDER BY ts", params)
            while rows := events.fetchmany(_BACKFILL_CHUNK):
                groups = _grouped(rows)
                last_bucket = max(bucket for bucket, _ in groups) if groups else None
                for (bucket, key), hashes in groups.items():
                    pending.append((bucket, key, hashes))
                # A bucket may go on in the next chunk: keep the last one back.
                done = [entry for entry in pending if entry[0] != last_bucket]
                if len(done) >= _WRITE_EVERY:
                    kept = [entry for entry in pending if entry[0] == last_bucket]
                    pending[:] = done
                    write()
                    pending[:] = kept
        write()

    def add_inserted(self, cursor: Cursor) -> None:
        """Add the rows this transaction inserted (the writer keeps them in `inserted_now`: not
        the duplicates its ON CONFLICT skipped)."""
        for path in sketched_paths(cursor):
            value_key, params = _value_key(path)
            rows = cursor.execute(f"SELECT {BUCKET_SQL}, key, {value_key} FROM inserted_now", params).fetchall()
            self._merge(cursor, path, _grouped(rows))

    def _merge(self, cursor: Cursor, path: str, groups: dict[tuple[int, str], list[int]]) -> None:
        """Add each group's hashes to this node's rows: one read of the rows there are (locked:
        the rows are this node's, only an erasure's rebuild touches them too) and one batch of
        upserts, whatever the number of groups."""
        if not groups:
            return
        all_keys: dict[int, list[int]] = defaultdict(list)
        for (bucket, _), hashes in groups.items():
            all_keys[bucket].extend(hashes)
        buckets = [bucket for bucket, _ in groups]
        found = cursor.execute(
            "SELECT bucket, key, registers FROM sketch_15m WHERE path = %s AND node = %s AND (bucket, key) IN"
            " (SELECT * FROM unnest(%s::bigint[], %s::text[])) FOR UPDATE",
            (path, self.node, buckets, [key for _, key in groups]),
        ).fetchall()
        existing = {(int(bucket), str(key)): bytes(blob) for bucket, key, blob in found}
        cursor.executemany(
            "INSERT INTO sketch_15m (path, bucket, key, node, registers) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (path, bucket, key, node) DO UPDATE SET registers = excluded.registers",
            [
                (path, bucket, key, self.node, encode(_registers(hashes, existing.get((bucket, key)))))
                for (bucket, key), hashes in groups.items()
            ],
        )
        found = cursor.execute(
            "SELECT bucket, registers FROM sketch_15m_all_keys WHERE path = %s AND node = %s AND bucket = ANY(%s)"
            " FOR UPDATE",
            (path, self.node, list(all_keys)),
        ).fetchall()
        existing_all = {int(bucket): bytes(blob) for bucket, blob in found}
        cursor.executemany(
            "INSERT INTO sketch_15m_all_keys (path, bucket, node, registers) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (path, bucket, node) DO UPDATE SET registers = excluded.registers",
            [
                (path, bucket, self.node, encode(_registers(hashes, existing_all.get(bucket))))
                for bucket, hashes in all_keys.items()
            ],
        )

    def rebuild(self, cursor: Cursor, pairs: Iterable[Sequence[Any]]) -> None:
        """Rebuild, from the events that remain, the sketches (every node's rows) of the
        (bucket, key) pairs a deletion touched, inside its transaction."""
        touched: BucketKeys = {(int(bucket), str(key)) for bucket, key in pairs}
        if not touched:
            return
        paths = sketched_paths(cursor)
        if not paths:
            return
        # A retention has not taken it: no insert may merge into a row being rebuilt.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ERASURE_LOCK,))
        for path in paths:
            value_key, params = _value_key(path)
            for bucket, key in touched:
                cursor.execute(
                    "DELETE FROM sketch_15m WHERE path = %s AND bucket = %s AND key = %s", (path, bucket, key)
                )
                rows = cursor.execute(
                    f"SELECT %s::bigint, key, {value_key} FROM events WHERE key = %s AND ts >= %s AND ts < %s",
                    [bucket, *params, key, bucket * BUCKET_US, (bucket + 1) * BUCKET_US],
                )
                for hashes in _grouped(rows).values():
                    cursor.execute(
                        "INSERT INTO sketch_15m (path, bucket, key, node, registers) VALUES (%s, %s, %s, %s, %s)",
                        (path, bucket, key, self.node, encode(_registers(hashes))),
                    )
            for bucket in {bucket for bucket, _ in touched}:
                cursor.execute("DELETE FROM sketch_15m_all_keys WHERE path = %s AND bucket = %s", (path, bucket))
                union = Union()
                found = False
                for (blob,) in cursor.execute(
                    "SELECT registers FROM sketch_15m WHERE path = %s AND bucket = %s", (path, bucket)
                ).fetchall():
                    union.add_sketch(bytes(cast(bytes, blob)))
                    found = True
                if found:
                    cursor.execute(
                        "INSERT INTO sketch_15m_all_keys (path, bucket, node, registers) VALUES (%s, %s, %s, %s)",
                        (path, bucket, self.node, encode(union.registers())),
                    )


def sketched(connection: psycopg.Connection[tuple[Any, ...]], path: str) -> bool:
    return connection.execute("SELECT 1 FROM sketched_properties WHERE path = %s", (path,)).fetchone() is not None


def sketches_answer(connection: psycopg.Connection[tuple[Any, ...]], path: str, where: EventFilter) -> bool:
    """As tlytics.store.sqlite.sketches.sketches_answer (the same rule, the same bound, so both
    stores count alike): the sketches answer unless the property's declared values are
    complete, `where` has no keys, and at most EXACT_UNIQUE_MAX_EVENTS events are in range
    (every node's rollup rows of the whole 15-minute buckets). Call inside one transaction."""
    if not sketched(connection, path):
        return False
    if path not in complete_properties(connection) or where.keys:
        return True
    low = where.since_us if where.since_us is not None else MIN_US
    high = where.until_us if where.until_us is not None else MAX_US + 1
    row = connection.execute(
        "SELECT coalesce(sum(count), 0) FROM rollup_15m WHERE bucket >= %s AND bucket < %s",
        (-(-low // BUCKET_US), high // BUCKET_US),
    ).fetchone()
    assert row is not None  # an aggregate always answers one row
    return int(row[0]) > EXACT_UNIQUE_MAX_EVENTS


def sketched_unique_counts(
    connection: psycopg.Connection[tuple[Any, ...]],
    starts_us: Sequence[int],
    end_us: int,
    where: EventFilter,
    path: str,
) -> UniqueCounts:
    """As tlytics.store.sqlite.sketches.sketched_unique_counts, merging every node's rows;
    call inside one read transaction."""
    assert not where.where
    of_keys = sql_where(EventFilter(keys=where.keys))
    table = "sketch_15m" if where.keys else "sketch_15m_all_keys"
    value_key, params = _value_key(path)

    def whole_buckets(first: int, last: int) -> Iterable[bytes]:
        in_buckets = of_keys.and_also("path = %s AND bucket >= %s AND bucket < %s", path, first, last)
        blobs = connection.execute(f"SELECT registers FROM {table}{in_buckets.sql}", in_buckets.params).fetchall()
        return (bytes(cast(bytes, blob)) for (blob,) in blobs)

    def edge_values(low: int, high: int) -> Iterable[Any]:
        in_edge = of_keys.and_also("ts >= %s AND ts < %s", low, high)
        values = connection.execute(f"SELECT {value_key} FROM events{in_edge.sql}", [*params, *in_edge.params])
        return (value for (value,) in values.fetchall())

    per_bucket, total = unique_counts_in_range(
        starts_us, end_us, where.since_us, where.until_us, BUCKET_US, whole_buckets, edge_values
    )
    return UniqueCounts(per_bucket=per_bucket, total=total, method="hll", relative_error=RELATIVE_ERROR)
