"""The read side of the SQLite store: pages, counts, the rollup-backed stats, breakdowns and id
lookups, on read-only connections, one per reading thread.

Each thread opens its own connection on its first read (WAL lets every one of them read while
the writer commits), so a slow filtered count on one thread holds up neither `/health` on
another nor the writer. The schema is the writer's business: a connection refuses a store
whose migrations have not run yet instead of misreading it.
"""

from __future__ import annotations

import bisect
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import apsw
import orjson

from tlytics.chunks import chunks
from tlytics.errors import StoreError
from tlytics.store.base import (
    Breakdown,
    EventFilter,
    Page,
    Position,
    PropertyMatch,
    StoredEvent,
    UniqueCounts,
    exact_unique_counts,
)
from tlytics.store.funnel import count_funnel, indexes_of
from tlytics.store.sql import ThreadConnections, grouped_number
from tlytics.store.sqlite.connection import connect, fold_wal_on_close, store_errors
from tlytics.store.sqlite.filters import declared_timestamps, sql_where
from tlytics.store.sqlite.properties import BREAKDOWN_PRESENT, BREAKDOWN_TOP, UNIQUE_VALUES, complete_properties
from tlytics.store.sqlite.schema import BUCKET_US, SCHEMA_VERSION, schema_version
from tlytics.store.sqlite.sketches import sketched, sketched_unique_counts
from tlytics.timefmt import MAX_US, MIN_US

_COUNT = "SELECT value FROM counters WHERE name = 'events'"
_INT64_MAX = 2**63 - 1
# The JSON type of a property, with integers and reals as one kind (1 and 1.0 are one value);
# NULL when the property is missing.
_VALUE_KIND_SQL = (
    "CASE json_type(data, ?1) WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' ELSE json_type(data, ?1) END"
)
_JSON_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _json_value(kind: str, value: Any) -> Any:
    """A property's value, from its kind and json_extract's SQL value, as a JSON value."""
    if kind in _JSON_LITERALS:
        return _JSON_LITERALS[kind]
    if kind in ("object", "array"):
        return orjson.loads(value)  # json_extract gives containers as JSON text
    if kind == "number":
        return grouped_number(value)
    return value


def _stored_event(row: tuple[Any, ...]) -> StoredEvent:
    event_id, key, timestamp_us, received_at_us, data_json = row
    return StoredEvent(
        id=str(uuid.UUID(bytes=event_id)),
        key=key,
        timestamp_us=timestamp_us,
        received_at_us=received_at_us,
        data_json=data_json,
    )


def _time_range(where: EventFilter) -> tuple[int, int]:
    """[since, until) of `where`, every stored timestamp when unbounded."""
    return (
        MIN_US if where.since_us is None else where.since_us,
        MAX_US + 1 if where.until_us is None else where.until_us,
    )


def _count(connection: apsw.Connection, query: str, params: Sequence[Any]) -> int:
    row = connection.execute(query, params).fetchone()
    assert row is not None  # an aggregate always answers one row
    return cast(int, row[0])


class SQLiteReader:
    """The read side of the store on one SQLite file; callable from any number of threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._connections: ThreadConnections[apsw.Connection] = ThreadConnections(f"store {self.path}", _close_quietly)

    def _read_connection(self) -> apsw.Connection:
        """This thread's read-only connection, opened on its first read."""
        return self._connections.get(self._open)

    def _open(self) -> apsw.Connection:
        with store_errors(f"opening store {self.path} for reading"):
            connection = connect(self.path, "normal", readonly=True)  # synchronous: no writes here
            version = schema_version(connection)
        if version != SCHEMA_VERSION:
            connection.close()
            raise StoreError(
                f"{self.path} has schema version {version}, this Tlytics reads {SCHEMA_VERSION}:"
                " the writer side migrates it when it opens"
            )
        return connection

    def count(self) -> int:
        with store_errors("count"):
            return _count(self._read_connection(), _COUNT, ())

    def page(
        self,
        page: int,
        page_size: int,
        *,
        where: EventFilter = EventFilter(),
        after: Position | None = None,
        ascending: bool = False,
    ) -> Page:
        direction = "ASC" if ascending else "DESC"
        # A page beyond any store is simply past the end (SQLite's OFFSET is a 64-bit integer).
        offset = 0 if after is not None else min((page - 1) * page_size, _INT64_MAX)
        connection = self._read_connection()
        # One read transaction, so the total and the rows come from the same snapshot.
        with store_errors("page read"), connection:
            matching = sql_where(where, complete_properties(connection))
            shown = matching
            if after is not None:
                # Keyset pagination: a seek on the (ts, id) index, as fast at any depth.
                shown = matching.and_also(f"(ts, id) {'>' if ascending else '<'} (?, ?)", after.timestamp_us, after.id)
            query = (
                f"SELECT id, key, ts, received_at, data FROM events{shown.sql}"
                f" ORDER BY ts {direction}, id {direction} LIMIT ? OFFSET ?"
            )
            if where.is_empty:
                total = _count(connection, _COUNT, ())
            else:
                total = _count(connection, f"SELECT count(*) FROM events{matching.sql}", matching.params)
            # One row more than asked tells whether a next page exists.
            rows = connection.execute(query, [*shown.params, page_size + 1, offset]).fetchall()
        next_position = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_position = Position(timestamp_us=cast(int, last[2]), id=cast(bytes, last[0]))
        return Page(total=total, events=[_stored_event(row) for row in rows], next_position=next_position)

    def keys_summary(self) -> list[tuple[str, int, int, int]]:
        with store_errors("keys read"):
            rows = (
                self._read_connection()
                .execute("SELECT key, count, first_ts, last_ts FROM key_stats WHERE count > 0 ORDER BY count DESC, key")
                .fetchall()
            )
        return [(str(k), cast(int, c), cast(int, first), cast(int, last)) for k, c, first, last in rows]

    def bucket_counts(
        self, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
    ) -> list[tuple[int, int | None]]:
        bounds = list(itertools.pairwise([*starts_us, end_us]))
        if not where.where and unique_path is None:
            return self._rollup_counts(bounds, where)
        # ?1 is the property's path (when counted); the filter's parameters follow it.
        unique_sql = ", count(DISTINCT json_extract(data, ?1))" if unique_path else ""
        head = ["$." + unique_path] if unique_path else []
        connection = self._read_connection()
        results: list[tuple[int, int | None]] = []
        with store_errors("stats read"), connection:
            declared = complete_properties(connection)
            if unique_path in declared and not where.where and not where.keys:
                return self._declared_bucket_counts(connection, bounds, where, declared[unique_path])
            if unique_path is None and len(where.where) == 1 and where.where[0][0] in declared and not where.keys:
                path, match = where.where[0]
                return self._declared_condition_counts(connection, bounds, where, declared[path], match)
            for start, end in bounds:
                # The bucket's range in the filter itself: a declared property's values are
                # then read for the bucket only.
                low = start if where.since_us is None else max(start, where.since_us)
                high = end if where.until_us is None else min(end, where.until_us)
                bucket = sql_where(replace(where, since_us=low, until_us=high), declared)
                row = connection.execute(
                    f"SELECT count(*){unique_sql} FROM events{bucket.sql}", [*head, *bucket.params]
                ).fetchone()
                assert row is not None
                results.append((cast(int, row[0]), cast(int, row[1]) if unique_path else None))
        return results

    def _rollup_counts(self, bounds: list[tuple[int, int]], where: EventFilter) -> list[tuple[int, int | None]]:
        """Bucket counts from rollup_15m for a filter of keys and times only: the whole
        15-minute buckets inside each range come from the rollup, the ragged edges (less than
        15 minutes each) are counted from the events."""
        of_keys = sql_where(EventFilter(keys=where.keys))  # rollup_15m has a key column too
        connection = self._read_connection()

        def count(table: str, column: str, low: int, high: int) -> int:
            in_range = of_keys.and_also(f"{column} >= ? AND {column} < ?", low, high)
            total = "coalesce(sum(count), 0)" if table == "rollup_15m" else "count(*)"
            return _count(connection, f"SELECT {total} FROM {table}{in_range.sql}", in_range.params)

        results: list[tuple[int, int | None]] = []
        with store_errors("stats read"), connection:
            for start, end in bounds:
                low = start if where.since_us is None else max(start, where.since_us)
                high = end if where.until_us is None else min(end, where.until_us)
                if low >= high:
                    results.append((0, None))
                    continue
                first_whole = -(-low // BUCKET_US)  # ceil
                last_whole = high // BUCKET_US
                if first_whole >= last_whole:
                    total = count("events", "ts", low, high)
                else:
                    total = count("rollup_15m", "bucket", first_whole, last_whole)
                    if low < first_whole * BUCKET_US:
                        total += count("events", "ts", low, first_whole * BUCKET_US)
                    if last_whole * BUCKET_US < high:
                        total += count("events", "ts", last_whole * BUCKET_US, high)
                results.append((total, None))
        return results

    def unique_count(self, where: EventFilter, path: str) -> int:
        connection = self._read_connection()
        with store_errors("unique count read"), connection:
            declared = complete_properties(connection)
            if path in declared and not where.where and not where.keys:
                low, high = _time_range(where)
                return _count(connection, UNIQUE_VALUES, (declared[path], low, high))
            matching = sql_where(where, declared)
            # ?1 is the property's path; the filter's parameters follow it.
            unique = _count(
                connection,
                f"SELECT count(DISTINCT json_extract(data, ?1)) FROM events{matching.sql}",
                ["$." + path, *matching.params],
            )
        return unique

    def unique_counts(self, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str) -> UniqueCounts:
        if not where.where:
            connection = self._read_connection()
            # One read transaction: the sketches and the ragged edges from the same snapshot.
            with store_errors("unique counts read"), connection:
                if sketched(connection, path):
                    return sketched_unique_counts(connection, starts_us, end_us, where, path)
        return exact_unique_counts(self, starts_us, end_us, where, path)

    def funnel(self, where: EventFilter, steps: Sequence[str], by_path: str, within_us: int) -> list[int]:
        step_indexes = indexes_of(steps)
        connection = self._read_connection()
        with store_errors("funnel read"), connection:
            matching = sql_where(replace(where, keys=tuple(step_indexes)), complete_properties(connection)).and_also(
                "json_extract(data, ?1) IS NOT NULL"
            )
            query = f"SELECT json_extract(data, ?1), key, ts FROM events{matching.sql} ORDER BY ts, id"
            rows = connection.execute(query, ["$." + by_path, *matching.params])
            reached = count_funnel(
                ((actor, step, ts) for actor, key, ts in rows for step in step_indexes[key]), len(steps), within_us
            )
        return reached

    def breakdown(self, where: EventFilter, path: str, limit: int) -> Breakdown:
        """Values are grouped by JSON type and value, so `true` and `1`, or `"1"` and `1`, are
        told apart."""
        connection = self._read_connection()
        with store_errors("breakdown read"), connection:
            declared = complete_properties(connection)
            if path in declared and not where.where and not where.keys:
                return self._declared_breakdown(connection, declared[path], where, limit)
            matching = sql_where(where, declared)
            present = matching.and_also("json_type(data, ?1) IS NOT NULL")
            # ?1 is the property's path; the filter's parameters follow it.
            top = connection.execute(
                f"SELECT {_VALUE_KIND_SQL} AS kind, json_extract(data, ?1) AS value, count(*) AS n"
                f" FROM events{present.sql} GROUP BY kind, value ORDER BY n DESC, kind, value LIMIT ?",
                ["$." + path, *present.params, limit],
            ).fetchall()
            total, missing = connection.execute(
                f"SELECT count(*), coalesce(sum(json_type(data, ?1) IS NULL), 0) FROM events{matching.sql}",
                ["$." + path, *matching.params],
            ).fetchone() or (0, 0)
        return Breakdown(
            top=[(_json_value(str(kind), value), cast(int, n)) for kind, value, n in top],
            total=cast(int, total),
            missing=cast(int, missing),
        )

    def _declared_bucket_counts(
        self, connection: apsw.Connection, bounds: list[tuple[int, int]], where: EventFilter, number: int
    ) -> list[tuple[int, int | None]]:
        """Counts from the rollups and distinct values of a declared property from its stored
        values, for a filter of times only (inside the caller's read transaction)."""
        since, until = _time_range(where)
        results: list[tuple[int, int | None]] = []
        for (total, _), (start, end) in zip(self._rollup_counts(bounds, where), bounds, strict=True):
            low, high = max(start, since), min(end, until)
            results.append((total, _count(connection, UNIQUE_VALUES, (number, low, high)) if low < high else 0))
        return results

    def _declared_condition_counts(
        self,
        connection: apsw.Connection,
        bounds: list[tuple[int, int]],
        where: EventFilter,
        number: int,
        match: PropertyMatch,
    ) -> list[tuple[int, int | None]]:
        """Bucket counts for one condition on a declared property and times: one read of the
        matching values' timestamps over the whole range, each counted in its bucket (`!=`:
        the rollups' counts less equality's), inside the caller's read transaction."""
        since, until = _time_range(where)
        low, high = max(bounds[0][0], since), min(bounds[-1][1], until)
        counts = [0] * len(bounds)
        if low < high:
            starts = [start for start, _ in bounds]
            sql, params = declared_timestamps(number, match, low, high)
            for (ts,) in connection.execute(sql, params):
                counts[bisect.bisect_right(starts, cast(int, ts)) - 1] += 1
        if match.op == "!=":
            every = self._rollup_counts(bounds, replace(where, where=()))
            counts = [total - equal for (total, _), equal in zip(every, counts, strict=True)]
        return [(count, None) for count in counts]

    def _declared_breakdown(
        self, connection: apsw.Connection, number: int, where: EventFilter, limit: int
    ) -> Breakdown:
        """A breakdown of a declared property over a time range: its stored values, grouped,
        and the events in range from the rollups (inside the caller's read transaction)."""
        low, high = _time_range(where)
        top = connection.execute(BREAKDOWN_TOP, (number, low, high, limit)).fetchall()
        present = _count(connection, BREAKDOWN_PRESENT, (number, low, high))
        total = self._rollup_counts([(low, high)], where)[0][0] if low < high else 0
        return Breakdown(
            top=[(_json_value(str(kind), value), cast(int, n)) for kind, value, n in top],
            total=total,
            missing=total - present,
        )

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        connection = self._read_connection()
        with store_errors(f"lookup of {len(ids)} ids"):
            for chunk in chunks(ids):
                marks = ",".join("?" * len(chunk))
                found.update(
                    row[0] for row in connection.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk)
                )
        return found

    def close(self) -> None:
        """Close every thread's connection; call once no read is running."""
        self._connections.close()
        fold_wal_on_close(self.path)


def _close_quietly(connection: apsw.Connection) -> None:
    try:
        connection.close()
    except apsw.Error:
        pass  # read-only: nothing to lose
