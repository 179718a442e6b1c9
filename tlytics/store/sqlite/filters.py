"""The one WHERE builder of the SQLite store: an `EventFilter` as SQL conditions and their
parameters, used alike by pages, counts, stats, breakdowns, retention and erasure, so a filter
means the same events wherever it is applied.

A property match is typed as a JSON reader reads it: json_extract alone cannot tell `true`
from `1` nor `null` from a missing property; json_type can.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tlytics.store.base import ORDERINGS, EventFilter, PropertyMatch
from tlytics.store.sql import SqlWhere
from tlytics.store.sqlite.properties import KIND_CODES, NUMBER, TEXT


def sql_where(where: EventFilter, declared: Mapping[str, int] | None = None) -> SqlWhere:
    """The SQL for `where` on the events table; a condition on a property of `declared` (path
    -> number, those complete: tlytics.store.sqlite.properties) reads its stored values."""
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
        if declared and path in declared:
            condition, values = declared_condition(declared[path], match, where.since_us, where.until_us)
        else:
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


def declared_condition(
    number: int, match: PropertyMatch, since_us: int | None, until_us: int | None
) -> tuple[str, list[Any]]:
    """SQL on the events table for `match` on declared property `number`: the same events as
    the JSON condition of tlytics.store.sqlite.filters, found through property_values (limited
    to the filter's time range, so only the values in range are read)."""
    inner = ["property = ?"]
    params: list[Any] = [number]
    if since_us is not None:
        inner.append("ts >= ?")
        params.append(since_us)
    if until_us is not None:
        inner.append("ts < ?")
        params.append(until_us)
    if match.op != "*":
        condition, values = value_condition(match)
        inner.append(condition)
        params += values
    selected = f"SELECT ts, id FROM property_values WHERE {' AND '.join(inner)}"
    # `!=` is everything equality does not select, a missing property included.
    membership = "NOT IN" if match.op == "!=" else "IN"
    return f"(events.ts, events.id) {membership} ({selected})", params


def declared_timestamps(number: int, match: PropertyMatch, since_us: int, until_us: int) -> tuple[str, list[Any]]:
    """SQL for the timestamps in [since, until) of the events whose declared property `number`
    matches `match`, read from its values alone (for `!=`: those equality selects, whose
    complement the caller takes)."""
    sql = "SELECT ts FROM property_values WHERE property = ? AND ts >= ? AND ts < ?"
    if match.op == "*":
        return sql, [number, since_us, until_us]
    condition, params = value_condition(match)
    return f"{sql} AND {condition}", [number, since_us, until_us, *params]


def value_condition(match: PropertyMatch) -> tuple[str, list[Any]]:
    """The condition on (kind, value) that mirrors the JSON condition for `match` (op `!=` as
    its equality)."""
    if match.op == "~":
        return f"kind = {TEXT} AND instr(lower(value), ?) > 0", [ascii_lower(match.text)]
    if match.op in ORDERINGS:
        return f"kind = {NUMBER} AND value {match.op} ?", [match.number]
    if match.kind in KIND_CODES:
        return "kind = ?", [KIND_CODES[match.kind]]
    if match.kind == "number" and match.number is not None:
        return f"kind IN ({NUMBER}, {TEXT}) AND value IN (?, ?)", [match.number, match.text]
    return f"kind = {TEXT} AND value = ?", [match.text]


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
