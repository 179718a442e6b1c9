"""The SQLite store's HyperLogLog sketches (see tlytics.store.sketch) of the properties
declared with `--unique-property`: kept by the writer in each insert's transaction, rebuilt
where a deletion took values away (a sketch cannot forget one), and merged by `/stats`.

Two tables: `sketch_15m` per (property, bucket, key), for a read filtered by key, and
`sketch_15m_all_keys` per (property, bucket), so a read of every key merges one sketch per
15-minute bucket instead of one per key and bucket. A property appears in
`sketched_properties` once its sketches cover every stored event; until then (and once it
is no longer declared) reads count it exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, cast

import apsw
import structlog

from tlytics.chunks import chunks
from tlytics.store.base import EventFilter, UniqueCounts
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
from tlytics.store.sqlite.filters import sql_where
from tlytics.store.sqlite.properties import complete_properties
from tlytics.store.sqlite.reads import time_range
from tlytics.store.sqlite.schema import BEFORE_EVERY_POSITION, BUCKET_SQL, BUCKET_US

log = structlog.get_logger("tlytics.store")

_BACKFILL_CHUNK = 200_000  # events per backfill transaction
# (bucket, key) pairs of the events a deletion is about to remove.
BucketKeys = set[tuple[int, str]]


def _grouped(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[int, str], list[int]]:
    """The hashes of (bucket, key, value) rows, per (bucket, key); values not counted left out."""
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for bucket, key, value in rows:
        hashed = value_hash(value)
        if hashed is not None:
            groups[(bucket, key)].append(hashed)
    return groups


class SketchKeeper:
    """The writer's side: keeps the sketches of `paths` on its write connection, backfilling
    those new to the store and forgetting those it has but `paths` lacks; None keeps the ones
    the store has (a migration or a tool must not undo what the server's settings declared)."""

    def __init__(self, connection: apsw.Connection, paths: Sequence[str] | None) -> None:
        self._connection = connection
        with connection:
            ready = {cast(str, row[0]) for row in connection.execute("SELECT path FROM sketched_properties")}
            self.paths = tuple(dict.fromkeys(paths)) if paths is not None else tuple(sorted(ready))
            for path in ready - set(self.paths):
                self._forget(path)  # no longer declared: read exactly, keep nothing stale
        for path in self.paths:
            if path not in ready:
                self._backfill(path)

    def _forget(self, path: str) -> None:
        for table in ("sketched_properties", "sketch_15m", "sketch_15m_all_keys"):
            self._connection.execute(f"DELETE FROM {table} WHERE path = ?", (path,))

    def _backfill(self, path: str) -> None:
        """Sketch every stored event, a chunk of events per transaction; the property is
        listed as ready in the last one, so a backfill cut short starts over next time."""
        connection = self._connection
        log.info("sketch_backfill_started", property=f"data.{path}")
        with connection:
            self._forget(path)
        after = BEFORE_EVERY_POSITION
        while True:
            with connection:
                end = connection.execute(
                    "SELECT ts, id FROM events WHERE (ts, id) > (?, ?) ORDER BY ts, id LIMIT 1 OFFSET ?",
                    (*after, _BACKFILL_CHUNK - 1),
                ).fetchone()
                if end is None:
                    self._add_rows(path, "events", "(ts, id) > (?, ?)", after)
                    connection.execute("INSERT INTO sketched_properties (path) VALUES (?)", (path,))
                    break
                self._add_rows(path, "events", "(ts, id) > (?, ?) AND (ts, id) <= (?, ?)", (*after, *end))
                after = (cast(int, end[0]), cast(bytes, end[1]))
        log.info("sketch_backfill_done", property=f"data.{path}")

    def add_new_rows(self) -> None:
        """Add this transaction's new events (the writer's staged rows: duplicates ignored by
        the insert are not among them) to the sketches."""
        for path in self.paths:
            self._add_rows(path, "temp.new_events", "true", ())

    def _add_rows(self, path: str, source: str, condition: str, params: tuple[Any, ...]) -> None:
        rows = self._connection.execute(
            f"SELECT {BUCKET_SQL}, key, json_extract(data, ?) FROM {source} WHERE {condition}", ("$." + path, *params)
        )
        groups = _grouped(rows)
        self._merge_into(path, "sketch_15m", groups)
        all_keys: dict[tuple[int, str], list[int]] = defaultdict(list)
        for (bucket, _key), hashes in groups.items():
            all_keys[(bucket, "")].extend(hashes)
        self._merge_into(path, "sketch_15m_all_keys", all_keys)

    def _merge_into(self, path: str, table: str, groups: dict[tuple[int, str], list[int]]) -> None:
        per_key = table == "sketch_15m"
        where = "path = ? AND bucket = ?" + (" AND key = ?" if per_key else "")
        updates = []
        for (bucket, key), hashes in groups.items():
            identity = (path, bucket, key) if per_key else (path, bucket)
            blob = self._connection.execute(f"SELECT registers FROM {table} WHERE {where}", identity).get
            registers = bytearray(decode(cast(bytes, blob)) if blob is not None else REGISTERS)
            add_hashes(registers, hashes)
            updates.append((*identity, encode(registers)))
        columns = "path, bucket, key, registers" if per_key else "path, bucket, registers"
        marks = ", ".join("?" * len(columns.split(",")))
        self._connection.executemany(f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})", updates)

    def touched(self, ids: Sequence[bytes]) -> BucketKeys:
        """The (bucket, key) pairs of the events `ids`, read before they are deleted."""
        pairs: BucketKeys = set()
        if not self.paths:
            return pairs
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT DISTINCT {BUCKET_SQL}, key FROM events WHERE id IN ({marks})"
            pairs.update((cast(int, bucket), cast(str, key)) for bucket, key in self._connection.execute(query, chunk))
        return pairs

    def rebuild(self, pairs: BucketKeys) -> None:
        """Rebuild, from the events that remain, the sketches of the (bucket, key) pairs and
        buckets a deletion touched (inside its transaction)."""
        if not pairs:
            return
        connection = self._connection
        for path in self.paths:
            for bucket, key in pairs:
                connection.execute(
                    "DELETE FROM sketch_15m WHERE path = ? AND bucket = ? AND key = ?", (path, bucket, key)
                )
                self._add_rows_of_bucket(path, bucket, key)
            for bucket in {bucket for bucket, _ in pairs}:
                # The all-keys sketch of the bucket is the union of what its keys' sketches hold now.
                union = Union()
                found = False
                for (blob,) in connection.execute(
                    "SELECT registers FROM sketch_15m WHERE path = ? AND bucket = ?", (path, bucket)
                ):
                    union.add_sketch(cast(bytes, blob))
                    found = True
                if found:
                    connection.execute(
                        "INSERT OR REPLACE INTO sketch_15m_all_keys (path, bucket, registers) VALUES (?, ?, ?)",
                        (path, bucket, encode(union.registers())),
                    )
                else:
                    connection.execute("DELETE FROM sketch_15m_all_keys WHERE path = ? AND bucket = ?", (path, bucket))

    def _add_rows_of_bucket(self, path: str, bucket: int, key: str) -> None:
        rows = self._connection.execute(
            "SELECT ?, key, json_extract(data, ?) FROM events WHERE key = ? AND ts >= ? AND ts < ?",
            (bucket, "$." + path, key, bucket * BUCKET_US, (bucket + 1) * BUCKET_US),
        )
        self._merge_into(path, "sketch_15m", _grouped(rows))


def sketched(connection: apsw.Connection, path: str) -> bool:
    """Whether the sketches of data.`path` cover every stored event."""
    return connection.execute("SELECT 1 FROM sketched_properties WHERE path = ?", (path,)).get is not None


def sketches_answer(connection: apsw.Connection, path: str, where: EventFilter) -> bool:
    """Whether the sketches, rather than an exact count, answer the distinct values of
    data.`path` under `where` (keys and times only): they cover every stored event, and the
    property's declared values cannot count them fast — not yet backfilled, a filter of keys
    (the values are kept per property, not per key), or more than EXACT_UNIQUE_MAX_EVENTS
    events in range. Call inside the read transaction that answers."""
    if not sketched(connection, path):
        return False
    number = complete_properties(connection).get(path)
    if number is None or where.keys:
        return True
    low, high = time_range(where)
    return _events_at_least(connection, low, high) > EXACT_UNIQUE_MAX_EVENTS


def _events_at_least(connection: apsw.Connection, low: int, high: int) -> int:
    """The events of the whole 15-minute buckets inside [low, high), from the rollup: a lower
    bound of the events in range (short by the ragged edges), read in a few milliseconds."""
    first_whole, last_whole = -(-low // BUCKET_US), high // BUCKET_US
    return cast(
        int,
        connection.execute(
            "SELECT coalesce(sum(count), 0) FROM rollup_15m WHERE bucket >= ? AND bucket < ?", (first_whole, last_whole)
        ).get,
    )


def sketched_unique_counts(
    connection: apsw.Connection, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str
) -> UniqueCounts:
    """Distinct values of data.`path` per bucket and over [since, until) from the sketches of
    the whole 15-minute buckets, the ragged edges read from the events and hashed alike: the
    estimates of one HLL over exactly the events in range. `where` has keys and times only;
    call inside a read transaction."""
    assert not where.where
    of_keys = sql_where(EventFilter(keys=where.keys))
    table = "sketch_15m" if where.keys else "sketch_15m_all_keys"

    def whole_buckets(first: int, last: int) -> Iterable[bytes]:
        in_buckets = of_keys.and_also("path = ? AND bucket >= ? AND bucket < ?", path, first, last)
        for (blob,) in connection.execute(f"SELECT registers FROM {table}{in_buckets.sql}", in_buckets.params):
            yield cast(bytes, blob)

    def edge_values(low: int, high: int) -> Iterable[Any]:
        in_edge = of_keys.and_also("ts >= ? AND ts < ?", low, high)
        values = connection.execute(
            f"SELECT json_extract(data, ?1) FROM events{in_edge.sql}", ["$." + path, *in_edge.params]
        )
        return (value for (value,) in values)

    per_bucket, total = unique_counts_in_range(
        starts_us, end_us, where.since_us, where.until_us, BUCKET_US, whole_buckets, edge_values
    )
    return UniqueCounts(per_bucket=per_bucket, total=total, method="hll", relative_error=RELATIVE_ERROR)
