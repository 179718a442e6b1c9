"""Reads answered from the hourly counts of a declared property of few values
(tlytics.store.sqlite.preaggregates): a breakdown, and events per bucket for one condition on
the property, each with or without a key filter. A question that names no key reads the
counts summed over the keys (`property_counts_all_keys`), one row per hour and value; with
`key=` it reads the keys' own counts (`property_counts`).

The whole hours of a range come from the counts; its edges that cut an hour (a range that
starts at 10:20, a day in a time zone half an hour off UTC) are read per event, through the
property's stored values, so every answer is the one the JSON path gives.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, cast

import apsw
import orjson

from tlytics.store.base import Breakdown, EventFilter, PropertyMatch
from tlytics.store.sql import grouped_number
from tlytics.store.sqlite.filters import sql_where, value_condition
from tlytics.store.sqlite.preaggregates import HOUR_US
from tlytics.store.sqlite.reads import scalar, time_range
from tlytics.store.sqlite.schema import BUCKET_US

# Kind names, grouped and ordered as the JSON path's breakdown groups and orders them.
_KIND_NAME = (
    "CASE kind WHEN 1 THEN 'number' WHEN 2 THEN 'text' WHEN 3 THEN 'true' WHEN 4 THEN 'false'"
    " WHEN 5 THEN 'null' WHEN 6 THEN 'object' ELSE 'array' END"
)
_JSON_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def counted_properties(connection: apsw.Connection) -> dict[str, int]:
    """The declared properties whose counts answer reads: path -> number. Read it inside the
    read transaction that uses it."""
    rows = connection.execute("SELECT path, number FROM declared_properties WHERE complete AND counted")
    return {cast(str, path): cast(int, number) for path, number in rows}


def _whole_hours(low: int, high: int) -> tuple[int, int]:
    """The hours [first, last) inside [low, high) (first == last: none)."""
    first = -(-low // HOUR_US)  # ceil
    return first, max(first, high // HOUR_US)


def _edges(low: int, high: int) -> list[tuple[int, int]]:
    """The parts of [low, high) outside its whole hours (read per event)."""
    first, last = _whole_hours(low, high)
    if first == last:
        return [(low, high)] if low < high else []
    return [(a, b) for a, b in ((low, first * HOUR_US), (last * HOUR_US, high)) if a < b]


def _counts_table(keys: Sequence[str]) -> str:
    """The counts that answer a question about `keys` (none named: every key's, summed)."""
    return "property_counts" if keys else "property_counts_all_keys"


def _of_keys(column: str, keys: Sequence[str]) -> tuple[str, list[Any]]:
    if not keys:
        return "", []
    return f" AND {column} IN ({','.join('?' * len(keys))})", list(keys)


def condition_counts(
    connection: apsw.Connection,
    bounds: list[tuple[int, int]],
    where: EventFilter,
    number: int,
    match: PropertyMatch,
) -> list[tuple[int, int | None]]:
    """Events per bucket for keys, times and one condition on counted property `number`:
    one read of the counts of the whole hours of every bucket, the edges per event (`!=`:
    the rollups' events less equality's), inside the caller's read transaction."""
    since, until = time_range(where)
    spans = [(max(start, since), min(end, until)) for start, end in bounds]
    hours = [_whole_hours(low, high) for low, high in spans]
    counts = [0] * len(bounds)
    covered = [span for span in hours if span[0] < span[1]]
    condition, params = ("", []) if match.op == "*" else value_condition(match)
    if covered:
        keys_sql, key_params = _of_keys("key", where.keys)
        rows = connection.execute(
            f"SELECT hour, sum(count) FROM {_counts_table(where.keys)} WHERE property = ? AND hour >= ? AND hour < ?"
            f"{keys_sql}{' AND ' + condition if condition else ''} GROUP BY hour",
            [number, covered[0][0], covered[-1][1], *key_params, *params],
        )
        firsts = [first for first, _ in hours]
        for hour, count in rows:
            index = bisect.bisect_right(firsts, cast(int, hour)) - 1
            if index >= 0 and hours[index][0] <= cast(int, hour) < hours[index][1]:
                counts[index] += cast(int, count)
        if match.op == "!=":
            of_keys = sql_where(EventFilter(keys=where.keys))
            for index, (first, last) in enumerate(hours):
                in_hours = of_keys.and_also("bucket >= ? AND bucket < ?", first * _QUARTERS, last * _QUARTERS)
                every = scalar(
                    connection, f"SELECT coalesce(sum(count), 0) FROM rollup_15m{in_hours.sql}", in_hours.params
                )
                counts[index] = every - counts[index]
    edges = [(index, edge) for index, (low, high) in enumerate(spans) for edge in _edges(low, high)]
    if edges:
        in_edges = _edge_counts(connection, number, [edge for _, edge in edges], where.keys, (condition, params))
        if match.op == "!=":
            in_all = _edge_counts(connection, None, [edge for _, edge in edges], where.keys, ("", []))
            in_edges = [total - equal for total, equal in zip(in_all, in_edges, strict=True)]
        for (index, _), count in zip(edges, in_edges, strict=True):
            counts[index] += count
    return [(count, None) for count in counts]


def _edge_counts(
    connection: apsw.Connection,
    number: int | None,
    edges: list[tuple[int, int]],
    keys: Sequence[str],
    condition: tuple[str, list[Any]],
) -> list[int]:
    """For each edge, the events of `keys` in it whose stored value of property `number` meets
    `condition` (number None: every event), in one read (an edge is a range of the events' or
    the values' time index; the edges come as one JSON parameter)."""
    sql, params = condition
    if number is None:
        source, time_column = "events e", "e.ts"
        where_sql, head = "true", []
    else:
        joined = " JOIN events e ON e.ts = pv.ts AND e.id = pv.id" if keys else ""
        source, time_column = f"property_values pv{joined}", "pv.ts"
        where_sql, head = "pv.property = ?", [number]
    keys_sql, key_params = _of_keys("e.key", keys)
    rows = connection.execute(
        "WITH edges (position, low, high) AS (SELECT key, value ->> 0, value ->> 1 FROM json_each(?))"
        f" SELECT edges.position, (SELECT count(*) FROM {source} WHERE {where_sql} AND {time_column} >= edges.low"
        f" AND {time_column} < edges.high{keys_sql}{' AND ' + sql if sql else ''}) FROM edges ORDER BY edges.position",
        [orjson.dumps(edges).decode(), *head, *key_params, *params],
    ).fetchall()
    return [cast(int, count) for _, count in rows]


_QUARTERS = HOUR_US // BUCKET_US  # rollup buckets per hour


def breakdown(connection: apsw.Connection, number: int, where: EventFilter, limit: int, total: int) -> Breakdown:
    """A breakdown of counted property `number` over a time range and keys, of `total` events
    in all: the counts of its whole hours and the stored values of its edges, grouped by kind
    and value (inside the caller's read transaction)."""
    low, high = time_range(where)
    first, last = _whole_hours(low, high) if low < high else (0, 0)
    keys_sql, key_params = _of_keys("key", where.keys)
    parts = [
        # Not grouped here: grouped by (kind, value), SQLite would walk the value index, every hour.
        f"SELECT kind, value, count AS n FROM {_counts_table(where.keys)} WHERE property = ? AND hour >= ? AND hour < ?"
        f"{keys_sql}"
    ]
    params: list[Any] = [number, first, last, *key_params]
    # Each edge on its own (an OR of two time ranges would walk every value of the property).
    joined = " JOIN events e ON e.ts = pv.ts AND e.id = pv.id" if where.keys else ""
    for edge in _edges(low, high):
        parts.append(
            f"SELECT pv.kind, coalesce(pv.value, ''), count(*) FROM property_values pv{joined}"
            f" WHERE pv.property = ? AND pv.ts >= ? AND pv.ts < ?{_of_keys('e.key', where.keys)[0]} GROUP BY 1, 2"
        )
        params += [number, *edge, *key_params]
    # Grouped by kind (each kind has its own name), named once grouped.
    rows = connection.execute(
        f"SELECT {_KIND_NAME} AS kind_name, value, total FROM (SELECT kind, value, sum(n) AS total FROM"
        f" ({' UNION ALL '.join(parts)}) GROUP BY kind, value) ORDER BY total DESC, kind_name, value",
        params,
    ).fetchall()
    present = sum(cast(int, n) for _, _, n in rows)
    return Breakdown(
        top=[(_json_value(str(kind), value), cast(int, n)) for kind, value, n in rows[:limit]],
        total=total,
        missing=total - present,
    )


def _json_value(kind: str, value: Any) -> Any:
    """A property's value, from its kind name and stored value, as a JSON value (as
    tlytics.store.sqlite.property_reads names the JSON path's groups)."""
    if kind in _JSON_LITERALS:
        return _JSON_LITERALS[kind]
    if kind in ("object", "array"):
        return orjson.loads(value)
    if kind == "number":
        return grouped_number(value)
    return value
