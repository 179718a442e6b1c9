"""A `/view` page filtered by one condition on a declared property (and times): its total and
its page's positions read from the property's stored values alone, then only the page's own
events read, instead of every matching event looked up in the events and counted there.

The stored values select the very events the filter does: one value per event and property
(the values' primary key), kept with the events by the writer, erasure and retention. Not for
`!=`, which selects the events without a value too, nor with keys (the values do not hold
the event's key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import apsw

from tlytics.store.base import EventFilter, Position
from tlytics.store.sql import SqlWhere
from tlytics.store.sqlite.filters import value_condition
from tlytics.store.sqlite.preaggregates import counted_numbers
from tlytics.store.sqlite.properties import TEXT


def values_alone(connection: apsw.Connection, where: EventFilter, declared: Mapping[str, int]) -> SqlWhere | None:
    """The condition on the stored values that selects the events `where` does, or None when
    the values alone cannot tell (keys, several conditions, `!=`, an undeclared property)."""
    if where.keys or len(where.where) != 1:
        return None
    path, match = where.where[0]
    if path not in declared or match.op == "!=":
        return None
    number = declared[path]
    values = SqlWhere(("property = ?",), (number,))
    if where.since_us is not None:
        values = values.and_also("ts >= ?", where.since_us)
    if where.until_us is not None:
        values = values.and_also("ts < ?", where.until_us)
    if match.op == "~" and number in counted_numbers(connection):
        # A property of few values lists them all (tlytics.store.sqlite.preaggregates): the
        # search is tested once per listed value, and the values read by equality through the
        # value index, not each stored value's text tested.
        condition, params = value_condition(match)
        listed = [
            row[0]
            for row in connection.execute(
                f"SELECT value FROM property_count_values WHERE property = ? AND {condition}", [number, *params]
            )
        ]
        values = values.and_also(f"kind = {TEXT} AND value IN ({','.join('?' * len(listed))})", *listed)
    elif match.op != "*":
        condition, params = value_condition(match)
        values = values.and_also(condition, *params)
    return values


def page_of_values(
    connection: apsw.Connection,
    values: SqlWhere,
    page_size: int,
    offset: int,
    after: Position | None,
    ascending: bool,
) -> tuple[int, list[tuple[object, ...]]]:
    """The total the values select and the rows of the page (one more than `page_size` when
    there is a next page), in the caller's read transaction."""
    shown = values
    if after is not None:
        shown = values.and_also(f"(ts, id) {'>' if ascending else '<'} (?, ?)", after.timestamp_us, after.id)
    direction = "ASC" if ascending else "DESC"
    total = cast(int, connection.execute(f"SELECT count(*) FROM property_values{values.sql}", values.params).get)
    rows = connection.execute(
        "SELECT e.id, e.key, e.ts, e.received_at, e.data FROM"
        f" (SELECT ts, id FROM property_values{shown.sql} ORDER BY ts {direction}, id {direction} LIMIT ? OFFSET ?)"
        f" AS v JOIN events AS e ON e.ts = v.ts AND e.id = v.id ORDER BY e.ts {direction}, e.id {direction}",
        [*shown.params, page_size + 1, offset],
    ).fetchall()
    return total, rows
