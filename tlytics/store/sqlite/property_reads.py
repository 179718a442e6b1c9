"""The SQLite store's answers about one property's values: a breakdown (its most frequent
values) and a funnel (how many actors, told apart by a property, reached each step), as query
functions `fn(connection, *args)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import apsw
import orjson

from tlytics.store.base import Breakdown, EventFilter
from tlytics.store.funnel import count_funnel, indexes_of
from tlytics.store.sql import grouped_number
from tlytics.store.sqlite.connection import store_errors
from tlytics.store.sqlite.filters import sql_where
from tlytics.store.sqlite.preaggregate_reads import breakdown as counted_breakdown
from tlytics.store.sqlite.preaggregate_reads import counted_properties
from tlytics.store.sqlite.properties import BREAKDOWN_PRESENT, BREAKDOWN_TOP, complete_properties
from tlytics.store.sqlite.reads import scalar, time_range
from tlytics.store.sqlite.stats_reads import rollup_counts

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


def breakdown(connection: apsw.Connection, where: EventFilter, path: str, limit: int) -> Breakdown:
    """Values are grouped by JSON type and value, so `true` and `1`, or `"1"` and `1`, are
    told apart."""
    with store_errors("breakdown read"), connection:
        counted = counted_properties(connection)  # hourly counts, keys or not
        if path in counted and not where.where:
            in_range = rollup_counts(connection, [time_range(where)], where)[0][0]
            return counted_breakdown(connection, counted[path], where, limit, in_range)
        declared = complete_properties(connection)
        if path in declared and not where.where and not where.keys:
            return _declared_breakdown(connection, declared[path], where, limit)
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


def _declared_breakdown(connection: apsw.Connection, number: int, where: EventFilter, limit: int) -> Breakdown:
    """A breakdown of a declared property over a time range: its stored values, grouped,
    and the events in range from the rollups (inside the caller's read transaction)."""
    low, high = time_range(where)
    top = connection.execute(BREAKDOWN_TOP, (number, low, high, limit)).fetchall()
    present = scalar(connection, BREAKDOWN_PRESENT, (number, low, high))
    total = rollup_counts(connection, [(low, high)], where)[0][0] if low < high else 0
    return Breakdown(
        top=[(_json_value(str(kind), value), cast(int, n)) for kind, value, n in top],
        total=total,
        missing=total - present,
    )


def funnel(
    connection: apsw.Connection, where: EventFilter, steps: Sequence[str], by_path: str, within_us: int
) -> list[int]:
    step_indexes = indexes_of(steps)
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
