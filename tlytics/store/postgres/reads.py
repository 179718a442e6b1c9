"""The read side of the PostgreSQL store: pages, counts, the rollup-backed stats, breakdowns and
id lookups, on one connection per reading thread.

Each thread opens its own connection on its first read (and again after one broke, e.g. when
PostgreSQL restarted), so a slow filtered count on one thread holds up neither `/health` on
another nor any writer. Every call is one read-only REPEATABLE READ transaction: a page's total
and rows come from the same snapshot. The schema is the writers' business: a connection refuses
a database whose migrations have not run yet instead of misreading it.
"""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import orjson
import psycopg
from psycopg import IsolationLevel

from tlytics.chunks import chunks
from tlytics.errors import StoreError
from tlytics.store.base import Breakdown, EventFilter, Page, Position, StoredEvent
from tlytics.store.postgres.connection import connect, describe, store_errors, unusable
from tlytics.store.postgres.filters import property_value, sql_where
from tlytics.store.postgres.schema import BUCKET_US, SCHEMA_VERSION, Connection, schema_version

# The per-node counter rows, summed: no count(*) over the whole table.
_COUNT = "SELECT coalesce(sum(count), 0)::bigint FROM counters"
_INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]+\Z")
_JSON_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _json_value(kind: str, value: str) -> Any:
    """A property's value as a JSON value, from its kind and tlytics_group_value's text."""
    if kind in _JSON_LITERALS:
        return _JSON_LITERALS[kind]
    if kind == "number":
        return int(value) if _INTEGER.match(value) else float(value)
    if kind in ("object", "array"):
        return orjson.loads(value)
    return value


def _stored_event(row: tuple[Any, ...]) -> StoredEvent:
    event_id, key, timestamp_us, received_at_us, data_json = row
    return StoredEvent(
        id=str(event_id),
        key=key,
        timestamp_us=timestamp_us,
        received_at_us=received_at_us,
        data_json=data_json,
    )


def _count(connection: Connection, query: str, params: Sequence[Any]) -> int:
    row = connection.execute(query, params).fetchone()
    assert row is not None  # an aggregate always answers one row
    return cast(int, row[0])


class PostgresReader:
    """The read side of the store on one PostgreSQL database; callable from any number of threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._where = describe(url)
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._opened_lock = threading.Lock()
        self._closed = False

    def _reading(self) -> Connection:
        """This thread's connection, opened on its first read or after the last one broke."""
        if self._closed:
            raise StoreError(f"store {self._where} is closed")
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is not None and unusable(connection):
            self._forget(connection)
            connection = None
        if connection is None:
            with store_errors(f"opening store {self._where} for reading"):
                connection = connect(self.url, application="tlytics-reader")
                connection.isolation_level = IsolationLevel.REPEATABLE_READ
                connection.read_only = True
                try:
                    version = schema_version(connection)
                except BaseException:
                    connection.close()
                    raise
            if version != SCHEMA_VERSION:
                connection.close()
                raise StoreError(
                    f"{self._where} has schema version {version}, this Tlytics reads {SCHEMA_VERSION}:"
                    " the writer side migrates it when it opens"
                )
            with self._opened_lock:
                if self._closed:  # closed meanwhile: nobody would close this one
                    connection.close()
                    raise StoreError(f"store {self._where} is closed")
                self._opened.append(connection)
            self._local.connection = connection
        return connection

    def _forget(self, connection: Connection) -> None:
        with self._opened_lock:
            if connection in self._opened:
                self._opened.remove(connection)
        self._local.connection = None
        try:
            connection.close()
        except psycopg.Error:
            pass  # it is broken already

    @contextmanager
    def _transaction(self, action: str) -> Iterator[Connection]:
        """This thread's connection inside one read-only snapshot; StoreError when it fails."""
        connection = self._reading()
        try:
            with store_errors(action), connection.transaction():
                yield connection
        except StoreError:
            if unusable(connection):
                self._forget(connection)
            raise

    def count(self) -> int:
        with self._transaction("count") as connection:
            return _count(connection, _COUNT, ())

    def page(
        self,
        page: int,
        page_size: int,
        *,
        where: EventFilter = EventFilter(),
        after: Position | None = None,
        ascending: bool = False,
    ) -> Page:
        matching = sql_where(where)
        shown = matching
        if after is not None:
            # Keyset pagination: a seek on the (ts, id) index, as fast at any depth.
            shown = matching.and_also(
                f"(ts, id) {'>' if ascending else '<'} (%s, %s)", after.timestamp_us, uuid.UUID(bytes=after.id)
            )
        direction = "ASC" if ascending else "DESC"
        offset = 0 if after is not None else min((page - 1) * page_size, _INT64_MAX)
        query = (
            f"SELECT id, key, ts, received_at, data FROM events{shown.sql}"
            f" ORDER BY ts {direction}, id {direction} LIMIT %s OFFSET %s"
        )
        with self._transaction("page read") as connection:
            if where.is_empty:
                total = _count(connection, _COUNT, ())
            else:
                total = _count(connection, f"SELECT count(*) FROM events{matching.sql}", matching.params)
            # One row more than asked tells whether a next page exists.
            rows = connection.execute(query, (*shown.params, page_size + 1, offset)).fetchall()
        next_position = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_position = Position(timestamp_us=cast(int, last[2]), id=cast(uuid.UUID, last[0]).bytes)
        return Page(total=total, events=[_stored_event(row) for row in rows], next_position=next_position)

    def keys_summary(self) -> list[tuple[str, int, int, int]]:
        with self._transaction("keys read") as connection:
            rows = connection.execute(
                "SELECT key, sum(count)::bigint, min(first_ts), max(last_ts) FROM key_stats"
                " GROUP BY key HAVING sum(count) > 0 ORDER BY 2 DESC, key"
            ).fetchall()
        return [(str(k), cast(int, c), cast(int, first), cast(int, last)) for k, c, first, last in rows]

    def bucket_counts(
        self, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
    ) -> list[tuple[int, int | None]]:
        bounds = list(itertools.pairwise([*starts_us, end_us]))
        if not where.where and unique_path is None:
            return self._rollup_counts(bounds, where)
        matching = sql_where(where)
        unique_sql, head = "", list[Any]()
        if unique_path is not None:
            value, head = property_value(unique_path)
            unique_sql = f", count(DISTINCT tlytics_value_key({value}))"
        results: list[tuple[int, int | None]] = []
        with self._transaction("stats read") as connection:
            for start, end in bounds:
                bucket = matching.and_also("ts >= %s AND ts < %s", start, end)
                row = connection.execute(
                    f"SELECT count(*){unique_sql} FROM events{bucket.sql}", (*head, *bucket.params)
                ).fetchone()
                assert row is not None
                results.append((cast(int, row[0]), cast(int, row[1]) if unique_path else None))
        return results

    def _rollup_counts(self, bounds: list[tuple[int, int]], where: EventFilter) -> list[tuple[int, int | None]]:
        """Bucket counts from rollup_15m (every node's rows) for a filter of keys and times only:
        the whole 15-minute buckets inside each range come from the rollup, the ragged edges
        (less than 15 minutes each) are counted from the events."""
        of_keys = sql_where(EventFilter(keys=where.keys))  # rollup_15m has a key column too

        def count(connection: Connection, table: str, column: str, low: int, high: int) -> int:
            in_range = of_keys.and_also(f"{column} >= %s AND {column} < %s", low, high)
            total = "coalesce(sum(count), 0)::bigint" if table == "rollup_15m" else "count(*)"
            return _count(connection, f"SELECT {total} FROM {table}{in_range.sql}", in_range.params)

        results: list[tuple[int, int | None]] = []
        with self._transaction("stats read") as connection:
            for start, end in bounds:
                low = start if where.since_us is None else max(start, where.since_us)
                high = end if where.until_us is None else min(end, where.until_us)
                if low >= high:
                    results.append((0, None))
                    continue
                first_whole = -(-low // BUCKET_US)  # ceil
                last_whole = high // BUCKET_US
                if first_whole >= last_whole:
                    total = count(connection, "events", "ts", low, high)
                else:
                    total = count(connection, "rollup_15m", "bucket", first_whole, last_whole)
                    if low < first_whole * BUCKET_US:
                        total += count(connection, "events", "ts", low, first_whole * BUCKET_US)
                    if last_whole * BUCKET_US < high:
                        total += count(connection, "events", "ts", last_whole * BUCKET_US, high)
                results.append((total, None))
        return results

    def breakdown(self, where: EventFilter, path: str, limit: int) -> Breakdown:
        """Values are grouped by JSON kind and value, so `true` and `1`, or `"1"` and `1`, are
        told apart; ties are ordered as in SQLite (kind, then value)."""
        matching = sql_where(where)
        value, value_params = property_value(path)
        values = f"SELECT {value} AS v FROM events{matching.sql}"
        params = (*value_params, *matching.params)
        with self._transaction("breakdown read") as connection:
            top = connection.execute(
                "SELECT kind, grouped, count(*) AS n FROM ("
                f" SELECT tlytics_value_kind(v) AS kind, tlytics_group_value(v) AS grouped FROM ({values}) present"
                " WHERE v IS NOT NULL) kinds GROUP BY kind, grouped"
                " ORDER BY n DESC, kind COLLATE \"C\", CASE WHEN kind = 'number' THEN grouped::float8 END,"
                ' grouped COLLATE "C" LIMIT %s',
                (*params, limit),
            ).fetchall()
            row = connection.execute(
                f"SELECT count(*), count(*) FILTER (WHERE v IS NULL) FROM ({values}) matching", params
            ).fetchone()
        total, missing = row or (0, 0)
        return Breakdown(
            top=[(_json_value(str(kind), str(grouped)), cast(int, n)) for kind, grouped, n in top],
            total=cast(int, total),
            missing=cast(int, missing),
        )

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        if not ids:
            return found
        with self._transaction(f"lookup of {len(ids)} ids") as connection:
            for chunk in chunks(ids):
                rows = connection.execute(
                    "SELECT id FROM events WHERE id = ANY(%s::uuid[])", ([uuid.UUID(bytes=i) for i in chunk],)
                ).fetchall()
                found.update(cast(uuid.UUID, row[0]).bytes for row in rows)
        return found

    def close(self) -> None:
        """Close every thread's connection; call once no read is running."""
        with self._opened_lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for connection in opened:
            try:
                connection.close()
            except psycopg.Error:
                pass  # read-only: nothing to lose
