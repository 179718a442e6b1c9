"""Reads of declared properties on PostgreSQL (tlytics.store.postgres.declared stores them;
the condition a `where` on one becomes is filters.declared_condition): which are complete, and
the breakdown and distinct count of one over a time range alone, read from its values without
touching the events, grouped and counted as the JSON path groups and counts them
(tests/test_declared_properties.py compares both paths on the same data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from tlytics.store.base import EventFilter
from tlytics.store.postgres.filters import FALSE, NULL, NUMBER, TEXT, TRUE
from tlytics.store.postgres.partitions import Connection

# The kind names tlytics_value_kind gives (breakdowns order ties by them).
_KIND_NAME = (
    f"CASE kind WHEN {NUMBER} THEN 'number' WHEN {TEXT} THEN 'text' WHEN {TRUE} THEN 'true'"
    f" WHEN {FALSE} THEN 'false' WHEN {NULL} THEN 'null' WHEN 6 THEN 'object' ELSE 'array' END"
)
# What tlytics_value_key gives for the value (distinct counts count these).
_VALUE_KEY = (
    f"CASE kind WHEN {NUMBER} THEN 'n' || val WHEN {TRUE} THEN 'n1' WHEN {FALSE} THEN 'n0'"
    f" WHEN {NULL} THEN NULL ELSE 's' || val END"
)


def complete_properties(connection: Connection) -> dict[str, int]:
    """The declared properties whose values cover every stored event: path -> number (the
    reader's connection refuses a database whose schema lacks the table)."""
    rows = connection.execute("SELECT path, number FROM declared_properties WHERE complete").fetchall()
    return {str(path): cast(int, number) for path, number in rows}


def uses_values_alone(where: EventFilter, path: str, declared: Mapping[str, int]) -> bool:
    """Whether a breakdown or distinct count of `path` under `where` reads its values alone
    (a declared, complete property, and a filter of times only)."""
    return path in declared and not where.where and not where.keys


def _time_range(where: EventFilter) -> tuple[str, list[Any]]:
    conditions, params = "", []
    if where.since_us is not None:
        conditions += " AND ts >= %s"
        params.append(where.since_us)
    if where.until_us is not None:
        conditions += " AND ts < %s"
        params.append(where.until_us)
    return conditions, params


def unique_values(connection: Connection, number: int, where: EventFilter) -> int:
    """count(DISTINCT value) of a declared property over the filter's time range."""
    in_range, params = _time_range(where)
    row = connection.execute(
        f"SELECT count(DISTINCT {_VALUE_KEY}) FROM property_values WHERE property = %s{in_range}",
        (number, *params),
    ).fetchone()
    assert row is not None  # an aggregate always answers one row
    return cast(int, row[0])


def declared_breakdown(
    connection: Connection, number: int, where: EventFilter, limit: int
) -> tuple[list[tuple[Any, ...]], int, int]:
    """The top (kind name, grouped value, count) rows of a declared property over the filter's
    time range, ordered as the JSON breakdown orders them; the events in range, and how many of
    them lack the property. Call inside one snapshot (two statements)."""
    in_range, params = _time_range(where)
    top = connection.execute(
        f"SELECT kind_name, val, n FROM (SELECT {_KIND_NAME} AS kind_name, val, count(*) AS n"
        f" FROM property_values WHERE property = %s{in_range} GROUP BY 1, 2) grouped"
        ' ORDER BY n DESC, kind_name COLLATE "C",'
        " CASE WHEN kind_name = 'number' THEN tlytics_number_value(val) END, val LIMIT %s",
        (number, *params, limit),
    ).fetchall()
    counts = connection.execute(
        f"SELECT (SELECT count(*) FROM events WHERE true{in_range}),"
        f" (SELECT count(*) FROM property_values WHERE property = %s{in_range})",
        (*params, number, *params),
    ).fetchone()
    assert counts is not None
    total, present = cast(int, counts[0]), cast(int, counts[1])
    return list(top), total, total - present
