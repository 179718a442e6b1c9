"""The SQLite store's answers about events themselves: their number, pages of them, the keys
summary and id lookups, as query functions `fn(connection, *args)` run by `SQLiteReader.run`
(tlytics.store.sqlite.reader) on a read-only connection of the reading thread's own; also the
helpers the other read modules share.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

import apsw

from tlytics.chunks import chunks
from tlytics.store.base import EventFilter, Page, Position, StoredEvent
from tlytics.store.sqlite.connection import store_errors
from tlytics.store.sqlite.filters import sql_where
from tlytics.store.sqlite.properties import complete_properties
from tlytics.store.sqlite.value_pages import page_of_values, values_alone
from tlytics.timefmt import MAX_US, MIN_US

_COUNT = "SELECT value FROM counters WHERE name = 'events'"
_INT64_MAX = 2**63 - 1


def _stored_event(row: tuple[Any, ...]) -> StoredEvent:
    event_id, key, timestamp_us, received_at_us, data_json = row
    return StoredEvent(
        id=str(uuid.UUID(bytes=event_id)),
        key=key,
        timestamp_us=timestamp_us,
        received_at_us=received_at_us,
        data_json=data_json,
    )


def time_range(where: EventFilter) -> tuple[int, int]:
    """[since, until) of `where`, every stored timestamp when unbounded."""
    return (
        MIN_US if where.since_us is None else where.since_us,
        MAX_US + 1 if where.until_us is None else where.until_us,
    )


def scalar(connection: apsw.Connection, query: str, params: Sequence[Any]) -> int:
    """The one number an aggregate query answers."""
    row = connection.execute(query, params).fetchone()
    assert row is not None  # an aggregate always answers one row
    return cast(int, row[0])


def count(connection: apsw.Connection) -> int:
    with store_errors("count"):
        return scalar(connection, _COUNT, ())


def page(
    connection: apsw.Connection,
    page: int,
    page_size: int,
    where: EventFilter,
    after: Position | None,
    ascending: bool,
) -> Page:
    direction = "ASC" if ascending else "DESC"
    # A page beyond any store is simply past the end (SQLite's OFFSET is a 64-bit integer).
    offset = 0 if after is not None else min((page - 1) * page_size, _INT64_MAX)
    # One read transaction, so the total and the rows come from the same snapshot.
    with store_errors("page read"), connection:
        complete = complete_properties(connection)
        values = values_alone(connection, where, complete)
        if values is not None:
            total, rows = page_of_values(connection, values, page_size, offset, after, ascending)
            return _page(total, rows, page_size)
        matching = sql_where(where, complete)
        shown = matching
        if after is not None:
            # Keyset pagination: a seek on the (ts, id) index, as fast at any depth.
            shown = matching.and_also(f"(ts, id) {'>' if ascending else '<'} (?, ?)", after.timestamp_us, after.id)
        query = (
            f"SELECT id, key, ts, received_at, data FROM events{shown.sql}"
            f" ORDER BY ts {direction}, id {direction} LIMIT ? OFFSET ?"
        )
        if where.is_empty:
            total = scalar(connection, _COUNT, ())
        else:
            total = scalar(connection, f"SELECT count(*) FROM events{matching.sql}", matching.params)
        # One row more than asked tells whether a next page exists.
        rows = connection.execute(query, [*shown.params, page_size + 1, offset]).fetchall()
    return _page(total, rows, page_size)


def _page(total: int, rows: list[tuple[Any, ...]], page_size: int) -> Page:
    """The page of `rows` (one more than `page_size` when a next page exists)."""
    next_position = None
    if len(rows) > page_size:
        rows = rows[:page_size]
        last = rows[-1]
        next_position = Position(timestamp_us=cast(int, last[2]), id=cast(bytes, last[0]))
    return Page(total=total, events=[_stored_event(row) for row in rows], next_position=next_position)


def keys_summary(connection: apsw.Connection) -> list[tuple[str, int, int, int]]:
    with store_errors("keys read"):
        rows = connection.execute(
            "SELECT key, count, first_ts, last_ts FROM key_stats WHERE count > 0 ORDER BY count DESC, key"
        ).fetchall()
    return [(str(k), cast(int, c), cast(int, first), cast(int, last)) for k, c, first, last in rows]


def existing_ids(connection: apsw.Connection, ids: Sequence[bytes]) -> set[bytes]:
    found: set[bytes] = set()
    with store_errors(f"lookup of {len(ids)} ids"):
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in connection.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk))
    return found
