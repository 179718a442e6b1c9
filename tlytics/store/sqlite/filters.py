"""The one WHERE builder of the SQLite store: an `EventFilter` as SQL conditions and their
parameters, used alike by pages, counts, stats, breakdowns, retention and erasure, so a filter
means the same events wherever it is applied.

A property match is typed as a JSON reader reads it: json_extract alone cannot tell `true`
from `1` nor `null` from a missing property; json_type can.
"""

from __future__ import annotations

from typing import Any

from tlytics.store.base import EventFilter, PropertyMatch
from tlytics.store.sql import SqlWhere


def sql_where(where: EventFilter) -> SqlWhere:
    """The SQL for `where` on the events table."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.keys:
        conditions.append(f"key IN ({','.join('?' * len(where.keys))})")
        params += where.keys
    if where.since_us is not None:
        conditions.append("ts >= ?")
        params.append(where.since_us)
    if where.until_us is not None:
        conditions.append("ts < ?")
        params.append(where.until_us)
    for path, match in where.where:
        condition, values = _property_condition("$." + path, match)
        conditions.append(condition)
        params += values
    return SqlWhere(tuple(conditions), tuple(params))


def _property_condition(json_path: str, match: PropertyMatch) -> tuple[str, list[Any]]:
    """SQL for one typed property match."""
    if match.kind in ("true", "false", "null"):
        return "json_type(data, ?) = ?", [json_path, match.kind]
    if match.kind == "number" and match.number is not None:
        # Without affinity, SQLite never finds a text equal to a number: `IN (number, text)`
        # matches a JSON number by value and a JSON string by its exact text.
        return (
            "(json_type(data, ?) IN ('integer', 'real', 'text') AND json_extract(data, ?) IN (?, ?))",
            [json_path, json_path, match.number, match.text],
        )
    return "(json_type(data, ?) = 'text' AND json_extract(data, ?) = ?)", [json_path, json_path, match.text]
