"""The read side of the PostgreSQL store: pages, counts, the rollup-backed stats, breakdowns and
id lookups, on one connection per reading thread.

Each thread opens its own connection on its first read (and again after one broke, e.g. when
PostgreSQL restarted), so a slow filtered count on one thread holds up neither `/health` on
another nor any writer. Every read is one statement, so one snapshot (a page's total and rows
come from the same one) in one round trip; the breakdown's two statements share a read-only
REPEATABLE READ transaction. The schema is the writers' business: a connection refuses
a database whose migrations have not run yet instead of misreading it.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

import orjson
import psycopg
from psycopg import IsolationLevel

from tlytics.errors import StoreError
from tlytics.store.base import (
    Breakdown,
    EventFilter,
    Page,
    Position,
    StoredEvent,
    UniqueCounts,
    exact_unique_counts,
)
from tlytics.store.funnel import count_funnel, indexes_of
from tlytics.store.postgres.connection import connect, describe, store_errors, unusable
from tlytics.store.postgres.declared_reads import (
    complete_properties,
    declared_breakdown,
    unique_values,
    uses_values_alone,
)
from tlytics.store.postgres.filters import from_pg_text, property_value, sql_where
from tlytics.store.postgres.schema import BUCKET_US, SCHEMA_VERSION, Connection, schema_version
from tlytics.store.postgres.sketches import sketched, sketched_unique_counts
from tlytics.store.sql import ThreadConnections, grouped_number

# The per-node counter rows, summed: no count(*) over the whole table.
_COUNT = "SELECT coalesce(sum(count), 0)::bigint FROM counters"
_INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]+\Z")
_JSON_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _json_value(kind: str, value: str) -> Any:
    """A property's value as a JSON value, from its kind and tlytics_group_value's text (its
    strings coded by tlytics_json: decoded here)."""
    if kind in _JSON_LITERALS:
        return _JSON_LITERALS[kind]
    if kind == "number":
        return grouped_number(int(value) if _INTEGER.match(value) else float(value))
    if kind in ("object", "array"):
        return _decoded(orjson.loads(value))
    return from_pg_text(value)


def _decoded(value: Any) -> Any:
    """A JSON value with every string (keys too) decoded from tlytics_json's coding."""
    if isinstance(value, str):
        return from_pg_text(value)
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    if isinstance(value, dict):
        return {from_pg_text(key): _decoded(item) for key, item in value.items()}
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
        self._connections: ThreadConnections[Connection] = ThreadConnections(f"store {self._where}", _close_quietly)

    def _reading(self) -> Connection:
        """This thread's connection, opened on its first read or after the last one broke."""
        return self._connections.get(self._open, usable=lambda connection: not unusable(connection))

    def _open(self) -> Connection:
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
        return connection

    def _forget(self, connection: Connection) -> None:
        self._connections.forget(connection)

    @contextmanager
    def _transaction(self, action: str, *, statements: int = 1) -> Iterator[Connection]:
        """This thread's connection, inside one read-only snapshot when a read takes several
        statements (one statement is a snapshot of its own, and saves BEGIN and COMMIT: two
        round trips); StoreError when it fails."""
        connection = self._reading()
        try:
            with store_errors(action):
                if statements == 1:
                    yield connection
                else:
                    with connection.transaction():
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
        matching = sql_where(where, declared=self._declared() if where.where else None)
        shown = matching
        if after is not None:
            # Keyset pagination: a seek on the (ts, id) index, as fast at any depth.
            shown = matching.and_also(
                f"(ts, id) {'>' if ascending else '<'} (%s, %s)", after.timestamp_us, uuid.UUID(bytes=after.id)
            )
        direction = "ASC" if ascending else "DESC"
        order = f"ORDER BY ts {direction}, id {direction}"
        offset = 0 if after is not None else min((page - 1) * page_size, _INT64_MAX)
        columns = "id, key, ts, received_at, data"
        # One row more than asked tells whether a next page exists.
        rows_sql = f"SELECT {columns} FROM events{shown.sql} {order} LIMIT %s OFFSET %s"
        if offset:
            # Skip the offset on the (ts, id) index alone (an index-only scan where the filter
            # allows), then read the page's rows: not every skipped row's data.
            rows_sql = (
                f"SELECT {columns} FROM events WHERE (ts, id) IN"
                f" (SELECT ts, id FROM events{shown.sql} {order} LIMIT %s OFFSET %s)"
            )
        if where.is_empty:
            total_sql, total_params = "SELECT coalesce(sum(count), 0)::bigint AS n FROM counters", ()
        else:
            total_sql, total_params = f"SELECT count(*) AS n FROM events{matching.sql}", matching.params
        # One statement, so the total and the rows come from the same snapshot.
        query = (
            f"WITH total AS ({total_sql}), shown AS ({rows_sql})"
            f" SELECT total.n, shown.* FROM total LEFT JOIN shown ON true {order}"
        )
        with self._transaction("page read") as connection:
            answer = connection.execute(query, (*total_params, *shown.params, page_size + 1, offset)).fetchall()
        total = cast(int, answer[0][0])
        rows = [row[1:] for row in answer if row[1] is not None]
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
        matching = sql_where(where, declared=self._declared() if where.where else None)
        matching = matching.and_also("ts >= b.low AND ts < b.high")
        unique_sql, head = ", NULL::bigint", list[Any]()
        if unique_path is not None:
            value, head = property_value(unique_path)
            unique_sql = f", count(DISTINCT tlytics_value_key({value}))"
        # Every bucket in one statement: one round trip, one snapshot.
        query = (
            "SELECT counted.* FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS b(low, high, i)"
            f" CROSS JOIN LATERAL (SELECT count(*){unique_sql} FROM events{matching.sql}) counted ORDER BY b.i"
        )
        params = ([low for low, _ in bounds], [high for _, high in bounds], *head, *matching.params)
        with self._transaction("stats read") as connection:
            rows = connection.execute(query, params).fetchall()
        return [(cast(int, n), None if unique is None else cast(int, unique)) for n, unique in rows]

    def _rollup_counts(self, bounds: list[tuple[int, int]], where: EventFilter) -> list[tuple[int, int | None]]:
        """Bucket counts from rollup_15m (every node's rows) for a filter of keys and times only:
        the whole 15-minute buckets inside each range come from the rollup, the ragged edges
        (less than 15 minutes each) are counted from the events."""
        of_keys = sql_where(EventFilter(keys=where.keys))  # rollup_15m has a key column too
        # Per bucket: its whole 15-minute buckets, and its ragged edges before and after them
        # (empty ranges where there are none).
        ranges: list[tuple[int, int, int, int, int, int]] = []
        for start, end in bounds:
            low = start if where.since_us is None else max(start, where.since_us)
            high = end if where.until_us is None else min(end, where.until_us)
            first_whole = -(-low // BUCKET_US)  # ceil
            last_whole = high // BUCKET_US
            if low >= high:
                ranges.append((0, 0, 0, 0, 0, 0))
            elif first_whole >= last_whole:
                ranges.append((0, 0, low, high, 0, 0))
            else:
                ranges.append((first_whole, last_whole, low, first_whole * BUCKET_US, last_whole * BUCKET_US, high))
        rollup = of_keys.and_also("bucket >= b.whole_low AND bucket < b.whole_high")
        before = of_keys.and_also("ts >= b.low AND ts < b.first_whole_us")
        after = of_keys.and_also("ts >= b.last_whole_us AND ts < b.high")
        query = (
            f"SELECT (SELECT coalesce(sum(count), 0) FROM rollup_15m{rollup.sql})"
            f" + (SELECT count(*) FROM events{before.sql}) + (SELECT count(*) FROM events{after.sql})"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])"
            " WITH ORDINALITY AS b(whole_low, whole_high, low, first_whole_us, last_whole_us, high, i) ORDER BY b.i"
        )
        columns = [list(column) for column in zip(*ranges, strict=True)] if ranges else [[]] * 6
        with self._transaction("stats read") as connection:
            rows = connection.execute(query, (*rollup.params, *before.params, *after.params, *columns)).fetchall()
        return [(int(cast(Any, n)), None) for (n,) in rows]

    def unique_count(self, where: EventFilter, path: str) -> int:
        declared = self._declared()
        if uses_values_alone(where, path, declared):
            with self._transaction("unique count read") as connection:
                return unique_values(connection, declared[path], where)
        matching = sql_where(where, declared=declared)
        value, head = property_value(path)
        with self._transaction("unique count read") as connection:
            return _count(
                connection,
                f"SELECT count(DISTINCT tlytics_value_key({value})) FROM events{matching.sql}",
                (*head, *matching.params),
            )

    def unique_counts(self, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str) -> UniqueCounts:
        if not where.where:
            # One snapshot: the sketches and the ragged edges agree.
            with self._transaction("unique counts read", statements=2) as connection:
                if sketched(connection, path):
                    return sketched_unique_counts(connection, starts_us, end_us, where, path)
        return exact_unique_counts(self, starts_us, end_us, where, path)

    def funnel(self, where: EventFilter, steps: Sequence[str], by_path: str, within_us: int) -> list[int]:
        step_indexes = indexes_of(steps)
        matching = sql_where(replace(where, keys=tuple(step_indexes)), declared=self._declared())
        value, head = property_value(by_path)
        query = (
            f"SELECT actor, key, ts FROM (SELECT tlytics_value_key({value}) AS actor, key, ts, id"
            f" FROM events{matching.sql}) steps WHERE actor IS NOT NULL ORDER BY ts, id"
        )
        with self._transaction("funnel read") as connection:
            rows = connection.execute(query, (*head, *matching.params)).fetchall()
        return count_funnel(
            ((actor, step, cast(int, ts)) for actor, key, ts in rows for step in step_indexes[cast(str, key)]),
            len(steps),
            within_us,
        )

    def breakdown(self, where: EventFilter, path: str, limit: int) -> Breakdown:
        """Values are grouped by JSON kind and value, so `true` and `1`, or `"1"` and `1`, are
        told apart; ties are ordered as in SQLite (kind, then value)."""
        declared = self._declared()
        if uses_values_alone(where, path, declared):
            with self._transaction("breakdown read", statements=2) as connection:
                found, in_range, lacking = declared_breakdown(connection, declared[path], where, limit)
            return Breakdown([(_json_value(str(k), str(g)), cast(int, n)) for k, g, n in found], in_range, lacking)
        matching = sql_where(where, declared=declared)
        value, value_params = property_value(path)
        values = f"SELECT {value} AS v FROM events{matching.sql}"
        params = (*value_params, *matching.params)
        with self._transaction("breakdown read", statements=2) as connection:
            top = connection.execute(
                "SELECT kind, grouped, count(*) AS n FROM ("
                f" SELECT tlytics_value_kind(v) AS kind, tlytics_group_value(v) AS grouped FROM ({values}) present"
                " WHERE v IS NOT NULL) kinds GROUP BY kind, grouped"
                # Numbers in SQLite's order: 2^63 - 1 before the double 2^63 (as float8 they tie).
                ' ORDER BY n DESC, kind COLLATE "C",'
                " CASE WHEN kind = 'number' THEN tlytics_number_value(grouped) END,"
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

    def _declared(self) -> dict[str, int]:
        """The declared properties complete now (tlytics.store.postgres.declared_reads)."""
        with self._transaction("declared properties read") as connection:
            return complete_properties(connection)

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        if not ids:
            return found
        with self._transaction(f"lookup of {len(ids)} ids") as connection:
            # One array parameter: no limit on parameters to chunk for.
            rows = connection.execute(
                "SELECT id FROM event_ids WHERE id = ANY(%s::uuid[])", ([uuid.UUID(bytes=i) for i in ids],)
            ).fetchall()
        found.update(cast(uuid.UUID, row[0]).bytes for row in rows)
        return found

    def close(self) -> None:
        """Close every thread's connection; call once no read is running."""
        self._connections.close()


def _close_quietly(connection: Connection) -> None:
    try:
        connection.close()
    except psycopg.Error:
        pass  # read-only, or broken already: nothing to lose
