"""The one WHERE builder of the PostgreSQL store: an `EventFilter` as SQL conditions and their
parameters, used alike by pages, counts, stats, breakdowns, retention, erasure, and the
erasures recorded for other nodes' inserts (applied to the staging table, which has the
events' columns), so a filter means the same events wherever it is applied.

Properties are read from the stored text as `json` (never `jsonb`, which rewrites numbers):
`tlytics_json(data) #> path` keeps a number's spelling, so the SQL functions of the schema
(`tlytics_number_key`, `tlytics_value_key`) can tell apart what SQLite tells apart: an integer
within 64 bits is compared exactly, any other number as a double, `true` never equals `1`,
`null` is a value and a missing property is not. Matches are the SQLite store's, tested by the
same contract suite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from tlytics.store.base import ORDERINGS, EventFilter, PropertyMatch
from tlytics.store.sql import SqlWhere

# JSON types as stored in property_values.kind (tlytics.store.postgres.declared; the SQLite
# store's codes).
NUMBER, TEXT, TRUE, FALSE, NULL, OBJECT, ARRAY = range(1, 8)
_KIND_CODES = {"true": TRUE, "false": FALSE, "null": NULL}
# An index entry of property_values holds the first characters of `val`: a b-tree refuses
# entries of more than about 2,700 bytes, and a declared property may hold a long string.
INDEXED_CHARS = 200

# A path step that `#>` would take as an array index; SQLite's `$.a.0` only names a key "0".
_INDEX_LIKE = re.compile(r"-?[0-9]+\Z")


def pg_text(text: str) -> str:
    """`text` as the schema's tlytics_json codes strings (PostgreSQL text holds no U+0000):
    U+0001 as U+0001 U+0002, then U+0000 as U+0001 U+0001. Equal strings stay equal, different
    ones different, in the same order."""
    if "\x00" not in text and "\x01" not in text:
        return text
    return text.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")


_CODED = re.compile("\x01(.)", re.DOTALL)


def from_pg_text(text: str) -> str:
    """The string `pg_text` coded as `text`."""
    if "\x01" not in text:
        return text
    return _CODED.sub(lambda code: "\x00" if code[1] == "\x01" else "\x01", text)


def json_path(path: str) -> list[str]:
    """A property path (`a.b`) as the text[] `#>` takes."""
    return path.split(".")


def property_value(path: str, column: str = "data") -> tuple[str, list[Any]]:
    """SQL for the JSON value at data.`path` (SQL NULL when missing), and its parameters.

    A step that looks like an array index only reaches into an object, as in SQLite."""
    steps = json_path(path)
    value = f"(tlytics_json({column}) #> %s::text[])"
    params: list[Any] = [steps]
    for depth, step in enumerate(steps):
        if _INDEX_LIKE.match(step):
            value = f"(CASE WHEN json_typeof(tlytics_json({column}) #> %s::text[]) = 'object' THEN {value} END)"
            params = [steps[:depth], *params]
    return value, params


def sql_where(where: EventFilter, *, table: str = "", declared: Mapping[str, int] | None = None) -> SqlWhere:
    """The SQL for `where` on the events table (or one with its columns; `table` qualifies them);
    a condition on a property of `declared` (path -> number, those complete: see
    declared_reads.complete_properties) reads its stored values."""
    prefix = f"{table}." if table else ""
    conditions: list[str] = []
    params: list[Any] = []
    if where.keys:
        # No event key holds U+0000 (nor can PostgreSQL text): such a key matches nothing.
        conditions.append(f"{prefix}key = ANY(%s::text[])")
        params.append([key for key in where.keys if "\x00" not in key])
    if where.since_us is not None:
        conditions.append(f"{prefix}ts >= %s")
        params.append(where.since_us)
    if where.until_us is not None:
        conditions.append(f"{prefix}ts < %s")
        params.append(where.until_us)
    for path, match in where.where:
        if declared and path in declared:
            condition, match_params = declared_condition(declared[path], match, where, prefix or "events.")
            conditions.append(condition)
            params += match_params
            continue
        value, value_params = property_value(path, f"{prefix}data")
        condition, match_params = _property_condition(value, match)
        conditions.append(condition)
        params += value_params + match_params
    return SqlWhere(tuple(conditions), tuple(params))


def _property_condition(value: str, match: PropertyMatch) -> tuple[str, list[Any]]:
    """SQL for one typed property condition on the JSON `value`."""
    if match.op == "*":
        return f"({value} IS NOT NULL)", []
    if match.op == "~":
        # Folds ASCII letters only, as SQLite's LIKE does.
        return f"tlytics_contains_text({value}, %s)", [ascii_lower(pg_text(match.text))]
    if match.op in ORDERINGS:
        # Both sides as exact numerics from their JSON text; the filter's number is folded once.
        return f"(tlytics_json_number({value}) {match.op} tlytics_number_value(%s))", [match.text]
    condition, params = _equality_condition(value, match)
    if match.op == "!=":
        # Everything equality does not select, a missing property too.
        return f"NOT coalesce({condition}, false)", params
    return condition, params


def declared_condition(number: int, match: PropertyMatch, where: EventFilter, prefix: str) -> tuple[str, list[Any]]:
    """SQL on the events table (columns qualified by `prefix`) for `match` on declared property
    `number`: the events whose values match (the very events the JSON condition selects),
    limited to the filter's time range, so only the values in range are read."""
    inner = ["property = %s"]
    params: list[Any] = [number]
    if where.since_us is not None:
        inner.append("ts >= %s")
        params.append(where.since_us)
    if where.until_us is not None:
        inner.append("ts < %s")
        params.append(where.until_us)
    if match.op != "*":
        condition, values = _value_condition(match)
        inner.append(condition)
        params += values
    selected = f"SELECT ts, id FROM property_values WHERE {' AND '.join(inner)}"
    # `!=` is everything equality does not select, a missing property included.
    membership = "NOT IN" if match.op == "!=" else "IN"
    return f"(({prefix}ts, {prefix}id) {membership} ({selected}))", params


def _value_condition(match: PropertyMatch) -> tuple[str, list[Any]]:
    """The condition on (kind, num, val) mirroring the JSON condition for `match` (`!=` as its
    equality)."""
    if match.op == "~":
        # tlytics_contains_text on the stored text, written out (a call per value costs more
        # than the search): a coded NUL or U+0001 needs the whole-code search.
        needle = ascii_lower(pg_text(match.text))
        lowered = f"translate(val, '{_UPPER}', '{_LOWER}')"
        return (
            f"kind = {TEXT} AND CASE WHEN strpos(val, chr(1)) > 0 THEN tlytics_contains_coded({lowered}, %s)"
            f" ELSE strpos({lowered}, %s) > 0 END",
            [needle, needle],
        )
    if match.op in ORDERINGS:
        return f"kind = {NUMBER} AND num {match.op} tlytics_number_value(%s)", [match.text]
    if match.kind in _KIND_CODES:
        return "kind = %s", [_KIND_CODES[match.kind]]
    text_match = f"(kind = {TEXT} AND left(val, {INDEXED_CHARS}) = left(%s, {INDEXED_CHARS}) AND val = %s)"
    if match.kind == "number" and match.number is not None:
        # A JSON number of that value (the same equality key), or a JSON string spelt so.
        number_match = (
            f"(kind = {NUMBER} AND left(val, {INDEXED_CHARS}) = left(tlytics_number_key(%s), {INDEXED_CHARS})"
            " AND val = tlytics_number_key(%s))"
        )
        return f"({number_match} OR {text_match})", [match.text, match.text, match.text, match.text]
    coded = pg_text(match.text)
    return text_match, [coded, coded]


_UPPER, _LOWER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
_ASCII_LOWER = str.maketrans(_UPPER, _LOWER)


def ascii_lower(text: str) -> str:
    """`text` with its ASCII capitals lowered and nothing else changed."""
    return text.translate(_ASCII_LOWER)


def _equality_condition(value: str, match: PropertyMatch) -> tuple[str, list[Any]]:
    """SQL for one typed property match on the JSON `value`."""
    if match.kind == "null":
        return f"json_typeof({value}) = 'null'", []
    if match.kind in ("true", "false"):
        return f"tlytics_value_kind({value}) = %s", [match.kind]
    if match.kind == "number" and match.number is not None:
        # A JSON number of that value (keys computed by the same function on both sides),
        # or a JSON string spelt exactly so.
        return f"tlytics_matches_number({value}, tlytics_number_key(%s), %s)", [match.text, match.text]
    return f"tlytics_matches_string({value}, %s)", [pg_text(match.text)]


def filter_to_json(where: EventFilter) -> str:
    """`where` as JSON text, the same text for the same filter (an erasure recorded twice is
    one row)."""
    return orjson.dumps(
        {
            "keys": list(where.keys),
            "since_us": where.since_us,
            "until_us": where.until_us,
            # `op` only when not `=`: the text of an equality filter is the one earlier versions wrote.
            "where": [[path, _match_fields(m)] for path, m in where.where],
        },
        option=orjson.OPT_SORT_KEYS,
    ).decode()


def _match_fields(match: PropertyMatch) -> dict[str, Any]:
    fields: dict[str, Any] = {"kind": match.kind, "text": match.text, "number": match.number}
    if match.op != "=":
        fields["op"] = match.op
    return fields


def filter_from_json(text: str) -> EventFilter:
    """The filter `filter_to_json` wrote."""
    fields = orjson.loads(text)
    return EventFilter(
        keys=tuple(fields["keys"]),
        since_us=fields["since_us"],
        until_us=fields["until_us"],
        where=tuple(
            (
                path,
                PropertyMatch(kind=match["kind"], text=match["text"], number=match["number"], op=match.get("op", "=")),
            )
            for path, match in fields["where"]
        ),
    )
