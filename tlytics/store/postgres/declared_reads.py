"""Reads of declared properties on PostgreSQL (tlytics.store.postgres.declared stores them;
the condition a `where` on one becomes is filters.declared_condition): which are complete, and
the breakdown and distinct count of one over a time range alone, read from its values without
touching the events, grouped and counted as the JSON path groups and counts them
(tests/test_declared_properties.py compares both paths on the same data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from tlytics.store.base import EventFilter, UniqueCounts
from tlytics.store.postgres.filters import FALSE, NULL, NUMBER, TEXT, TRUE
from tlytics.store.postgres.partitions import Connection
from tlytics.timefmt import MAX_US, MIN_US

# The kind names tlytics_value_kind gives (breakdowns order ties by them).
_KIND_NAME = (
    f"CASE kind WHEN {NUMBER} THEN 'number' WHEN {TEXT} THEN 'text' WHEN {TRUE} THEN 'true'"
    f" WHEN {FALSE} THEN 'false' WHEN {NULL} THEN 'null' WHEN 6 THEN 'object' ELSE 'array' END"
)
# What tlytics_value_key gives for the value (distinct counts count these).
VALUE_KEY = (
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


def for_many_values(connection: Connection) -> None:
    """Settings for this transaction's reads of many stored values: no JIT (compiling took
    longer, about 100 ms, than the reads), and room to sort the values of a month in memory
    (count(DISTINCT) sorted 500,000 values on disk past the default 4 MB, 2-3 times slower)."""
    connection.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)")


def unique_values(connection: Connection, number: int, where: EventFilter) -> int:
    """count(DISTINCT value) of a declared property over the filter's time range. Call inside a
    transaction (two statements)."""
    in_range, params = _time_range(where)
    for_many_values(connection)
    row = connection.execute(
        f"SELECT count(DISTINCT {VALUE_KEY}) FROM property_values WHERE property = %s{in_range}",
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


def declared_unique_counts(
    connection: Connection, starts_us: Sequence[int], end_us: int, where: EventFilter, number: int
) -> UniqueCounts:
    """The distinct values of declared property `number` in each bucket (from each start to the
    next, the last to `end_us`, within the filter's times) and over the filter's times, from its
    values alone (a filter of times only), in one statement: a bucket's distinct values sorted
    on their own (a day's fit the caches; one pass hashing every (bucket, value) pair took 15%
    longer), then the whole range's. Call inside a transaction (two statements)."""
    in_range, params = _time_range(where)
    low, high = (
        (MIN_US if where.since_us is None else where.since_us),
        (MAX_US + 1 if where.until_us is None else where.until_us),
    )
    ends = [*starts_us[1:], end_us]
    for_many_values(connection)
    rows = connection.execute(
        "SELECT b.i, CASE WHEN b.low < b.high THEN"
        f" (SELECT count(DISTINCT {VALUE_KEY}) FROM property_values WHERE property = %s AND ts >= b.low AND ts < b.high)"
        " ELSE 0 END FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS b(low, high, i)"
        f" UNION ALL SELECT NULL, count(DISTINCT {VALUE_KEY}) FROM property_values WHERE property = %s{in_range}",
        (
            number,
            [max(start, low) for start in starts_us],
            [min(end, high) for end in ends],
            number,
            *params,
        ),
    ).fetchall()
    per_bucket = [0] * len(starts_us)
    total = 0
    for bucket, n in rows:
        if bucket is None:
            total = cast(int, n)
        else:
            per_bucket[cast(int, bucket) - 1] = cast(int, n)
    return UniqueCounts(per_bucket=per_bucket, total=total)
