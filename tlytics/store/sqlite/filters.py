"""The one WHERE builder of the SQLite store: an `EventFilter` as SQL conditions and their
parameters, used alike by pages, counts, stats, breakdowns, retention and erasure, so a filter
means the same events wherever it is applied.

A property match is typed as a JSON reader reads it: json_extract alone cannot tell `true`
from `1` nor `null` from a missing property; json_type can.
"""

from __future__ import annotations

from typing import Any

from tlytics.store.base import ORDERINGS, EventFilter, PropertyMatch
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
    """SQL for one typed property condition."""
    if match.op == "*":
        return "json_type(data, ?) IS NOT NULL", [json_path]
    if match.op == "~":
        # lower() folds ASCII letters only, as the PostgreSQL store does; instr() and lower()
        # read the whole string (LIKE stops at a NUL, in the pattern and in the value); a
        # missing property or another type is never a match.
        return (
            "(json_type(data, ?) = 'text' AND instr(lower(json_extract(data, ?)), ?) > 0)",
            [json_path, json_path, ascii_lower(match.text)],
        )
    if match.op in ORDERINGS:
        return (
            f"(json_type(data, ?) IN ('integer', 'real') AND json_extract(data, ?) {match.op} ?)",
            [json_path, json_path, match.number],
        )
    condition, params = _equality_condition(json_path, match)
    if match.op == "!=":
        # Everything equality does not select: NULL (a missing property) counts as no match.
        return f"NOT coalesce({condition}, 0)", params
    return condition, params


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """`text` with its ASCII capitals lowered and nothing else changed."""
    return text.translate(_ASCII_LOWER)


def _equality_condition(json_path: str, match: PropertyMatch) -> tuple[str, list[Any]]:
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
