"""The PostgreSQL store's answers about events themselves: their number, pages of them, the keys
summary and id lookups, as query functions `fn(connection, *args)` run by `PostgresReader.run`
(tlytics.store.postgres.reader) on the reading thread's own connection; also the helpers the
other read modules share.

Every read is one statement, so one snapshot (a page's total and rows come from the same one)
in one round trip; a read of several statements shares a read-only REPEATABLE READ transaction
(`transaction`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import orjson

from tlytics.store.base import EventFilter, Page, Position, StoredEvent
from tlytics.store.postgres.connection import store_errors
from tlytics.store.postgres.declared_reads import complete_properties
from tlytics.store.postgres.filters import _value_condition, from_pg_text, sql_where
from tlytics.store.postgres.schema import Connection
from tlytics.store.sql import SqlWhere, grouped_number

# The per-node counter rows, summed: no count(*) over the whole table.
_COUNT = "SELECT coalesce(sum(count), 0)::bigint FROM counters"
_INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]+\Z")
_JSON_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def json_value(kind: str, value: str) -> Any:
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


def scalar(connection: Connection, query: str, params: Sequence[Any]) -> int:
    row = connection.execute(query, params).fetchone()
    assert row is not None  # an aggregate always answers one row
    return cast(int, row[0])


@contextmanager
def transaction(connection: Connection, action: str, *, statements: int = 1) -> Iterator[None]:
    """Inside one read-only snapshot when a read takes several statements (one statement is a
    snapshot of its own, and saves BEGIN and COMMIT: two round trips); StoreError when it
    fails (the reader replaces a connection found broken)."""
    with store_errors(action):
        if statements == 1:
            yield
        else:
            with connection.transaction():
                yield


def declared_now(connection: Connection) -> dict[str, int]:
    """The declared properties complete now, by number (tlytics.store.postgres.declared_reads):
    a read's conditions on them read their stored values, not the JSON."""
    with transaction(connection, "declared properties read"):
        return complete_properties(connection)


def count(connection: Connection) -> int:
    with transaction(connection, "count"):
        return scalar(connection, _COUNT, ())


def page(
    connection: Connection,
    page: int,
    page_size: int,
    where: EventFilter,
    after: Position | None,
    ascending: bool,
) -> Page:
    declared = declared_now(connection) if where.where else None
    values = _values_alone(where, declared or {})
    if values is not None:
        return _page_of_values(connection, page, page_size, after, ascending, values)
    matching = sql_where(where, declared=declared)
    shown, order, offset = _walk(matching, page, page_size, after, ascending)
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
    with transaction(connection, "page read"):
        answer = connection.execute(query, (*total_params, *shown.params, page_size + 1, offset)).fetchall()
    return _page(answer, page_size)


def _walk(
    selected: SqlWhere, page: int, page_size: int, after: Position | None, ascending: bool
) -> tuple[SqlWhere, str, int]:
    """Where a page of `selected` starts: the rows shown (after the cursor: a keyset seek on
    (ts, id), as fast at any depth), their order, and the offset of a page by number."""
    shown = selected
    if after is not None:
        shown = selected.and_also(
            f"(ts, id) {'>' if ascending else '<'} (%s, %s)", after.timestamp_us, uuid.UUID(bytes=after.id)
        )
    direction = "ASC" if ascending else "DESC"
    offset = 0 if after is not None else min((page - 1) * page_size, _INT64_MAX)
    return shown, f"ORDER BY ts {direction}, id {direction}", offset


def _page(answer: list[tuple[Any, ...]], page_size: int) -> Page:
    """The page of the rows (total, then the event's columns or NULLs) a page read answered."""
    total = cast(int, answer[0][0])
    rows = [row[1:] for row in answer if row[1] is not None]
    next_position = None
    if len(rows) > page_size:
        rows = rows[:page_size]
        last = rows[-1]
        next_position = Position(timestamp_us=cast(int, last[2]), id=cast(uuid.UUID, last[0]).bytes)
    return Page(total=total, events=[_stored_event(row) for row in rows], next_position=next_position)


def _values_alone(where: EventFilter, declared: Mapping[str, int]) -> SqlWhere | None:
    """For a filter of one condition on a declared property and times (no keys; not `!=`,
    which selects the events without a value too): the condition on its stored values, which
    select the very events the filter does (one value per event at most); else None."""
    if where.keys or len(where.where) != 1 or where.where[0][0] not in declared or where.where[0][1].op == "!=":
        return None
    path, match = where.where[0]
    values = SqlWhere(("property = %s",), (declared[path],))
    if where.since_us is not None:
        values = values.and_also("ts >= %s", where.since_us)
    if where.until_us is not None:
        values = values.and_also("ts < %s", where.until_us)
    if match.op != "*":
        condition, params = _value_condition(match)
        values = values.and_also(condition, *params)
    return values


def _page_of_values(
    connection: Connection, page: int, page_size: int, after: Position | None, ascending: bool, values: SqlWhere
) -> Page:
    """A page whose events and total are those of the stored values `values` selects: the
    total counted from the values alone, the page's positions found among them and only its
    own events read (not every matching event joined, then sorted)."""
    shown, order, offset = _walk(values, page, page_size, after, ascending)
    query = (
        f"WITH total AS (SELECT count(*) AS n FROM property_values{values.sql}),"
        " shown AS (SELECT id, key, ts, received_at, data FROM events WHERE (ts, id) IN"
        f" (SELECT ts, id FROM property_values{shown.sql} {order} LIMIT %s OFFSET %s))"
        f" SELECT total.n, shown.* FROM total LEFT JOIN shown ON true {order}"
    )
    with transaction(connection, "page read"):
        answer = connection.execute(query, (*values.params, *shown.params, page_size + 1, offset)).fetchall()
    return _page(answer, page_size)


def keys_summary(connection: Connection) -> list[tuple[str, int, int, int]]:
    with transaction(connection, "keys read"):
        rows = connection.execute(
            "SELECT key, sum(count)::bigint, min(first_ts), max(last_ts) FROM key_stats"
            " GROUP BY key HAVING sum(count) > 0 ORDER BY 2 DESC, key"
        ).fetchall()
    return [(str(k), cast(int, c), cast(int, first), cast(int, last)) for k, c, first, last in rows]


def existing_ids(connection: Connection, ids: Sequence[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    if not ids:
        return found
    with transaction(connection, f"lookup of {len(ids)} ids"):
        # One array parameter: no limit on parameters to chunk for.
        rows = connection.execute(
            "SELECT id FROM event_ids WHERE id = ANY(%s::uuid[])", ([uuid.UUID(bytes=i) for i in ids],)
        ).fetchall()
    found.update(cast(uuid.UUID, row[0]).bytes for row in rows)
    return found
