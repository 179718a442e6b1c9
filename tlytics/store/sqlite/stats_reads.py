"""The SQLite store's counts over time: events per bucket (from the 15-minute rollups where
the filter allows), distinct values of a property (exactly, from a declared property's stored
values, or estimated from sketches), as query functions `fn(connection, *args)`.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import apsw

from tlytics.store.base import EventFilter, PropertyMatch, UniqueCounts
from tlytics.store.sqlite.connection import store_errors
from tlytics.store.sqlite.filters import declared_timestamps, sql_where
from tlytics.store.sqlite.preaggregate_reads import condition_counts, counted_properties
from tlytics.store.sqlite.properties import UNIQUE_VALUES, complete_properties
from tlytics.store.sqlite.reads import scalar, time_range
from tlytics.store.sqlite.schema import BUCKET_US
from tlytics.store.sqlite.sketches import sketched_unique_counts, sketches_answer


def bucket_counts(
    connection: apsw.Connection, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
) -> list[tuple[int, int | None]]:
    bounds = list(itertools.pairwise([*starts_us, end_us]))
    if not where.where and unique_path is None:
        return rollup_counts(connection, bounds, where)
    # ?1 is the property's path (when counted); the filter's parameters follow it.
    unique_sql = ", count(DISTINCT json_extract(data, ?1))" if unique_path else ""
    head = ["$." + unique_path] if unique_path else []
    results: list[tuple[int, int | None]] = []
    with store_errors("stats read"), connection:
        declared = complete_properties(connection)
        if unique_path in declared and not where.where and not where.keys:
            return _declared_bucket_counts(connection, bounds, where, declared[unique_path])
        counted = counted_properties(connection)  # hourly counts, keys or not
        if unique_path is None and len(where.where) == 1 and where.where[0][0] in counted:
            path, match = where.where[0]
            return condition_counts(connection, bounds, where, counted[path], match)
        if unique_path is None and len(where.where) == 1 and where.where[0][0] in declared and not where.keys:
            path, match = where.where[0]
            return _declared_condition_counts(connection, bounds, where, declared[path], match)
        for start, end in bounds:
            # The bucket's range in the filter itself: a declared property's values are
            # then read for the bucket only.
            low = start if where.since_us is None else max(start, where.since_us)
            high = end if where.until_us is None else min(end, where.until_us)
            bucket = sql_where(replace(where, since_us=low, until_us=high), declared)
            row = connection.execute(
                f"SELECT count(*){unique_sql} FROM events{bucket.sql}", [*head, *bucket.params]
            ).fetchone()
            assert row is not None
            results.append((cast(int, row[0]), cast(int, row[1]) if unique_path else None))
    return results


def rollup_counts(
    connection: apsw.Connection, bounds: list[tuple[int, int]], where: EventFilter
) -> list[tuple[int, int | None]]:
    """Bucket counts from rollup_15m for a filter of keys and times only: the whole
    15-minute buckets inside each range come from the rollup, the ragged edges (less than
    15 minutes each) are counted from the events."""
    of_keys = sql_where(EventFilter(keys=where.keys))  # rollup_15m has a key column too

    def count(table: str, column: str, low: int, high: int) -> int:
        in_range = of_keys.and_also(f"{column} >= ? AND {column} < ?", low, high)
        total = "coalesce(sum(count), 0)" if table == "rollup_15m" else "count(*)"
        return scalar(connection, f"SELECT {total} FROM {table}{in_range.sql}", in_range.params)

    results: list[tuple[int, int | None]] = []
    with store_errors("stats read"), connection:
        for start, end in bounds:
            low = start if where.since_us is None else max(start, where.since_us)
            high = end if where.until_us is None else min(end, where.until_us)
            if low >= high:
                results.append((0, None))
                continue
            first_whole = -(-low // BUCKET_US)  # ceil
            last_whole = high // BUCKET_US
            if first_whole >= last_whole:
                total = count("events", "ts", low, high)
            else:
                total = count("rollup_15m", "bucket", first_whole, last_whole)
                if low < first_whole * BUCKET_US:
                    total += count("events", "ts", low, first_whole * BUCKET_US)
                if last_whole * BUCKET_US < high:
                    total += count("events", "ts", last_whole * BUCKET_US, high)
            results.append((total, None))
    return results


def unique_count(connection: apsw.Connection, where: EventFilter, path: str) -> int:
    with store_errors("unique count read"), connection:
        declared = complete_properties(connection)
        if path in declared and not where.where and not where.keys:
            low, high = time_range(where)
            return scalar(connection, UNIQUE_VALUES, (declared[path], low, high))
        matching = sql_where(where, declared)
        # ?1 is the property's path; the filter's parameters follow it.
        unique = scalar(
            connection,
            f"SELECT count(DISTINCT json_extract(data, ?1)) FROM events{matching.sql}",
            ["$." + path, *matching.params],
        )
    return unique


def unique_counts(
    connection: apsw.Connection, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str
) -> UniqueCounts:
    if not where.where:
        # One read transaction: the sketches and the ragged edges from the same snapshot.
        with store_errors("unique counts read"), connection:
            if sketches_answer(connection, path, where):
                return sketched_unique_counts(connection, starts_us, end_us, where, path)
    # Exactly, from the events (`exact_unique_counts` asks a reader the same two questions).
    per_bucket = [unique or 0 for _, unique in bucket_counts(connection, starts_us, end_us, where, path)]
    return UniqueCounts(per_bucket=per_bucket, total=unique_count(connection, where, path))


def _declared_bucket_counts(
    connection: apsw.Connection, bounds: list[tuple[int, int]], where: EventFilter, number: int
) -> list[tuple[int, int | None]]:
    """Counts from the rollups and distinct values of a declared property from its stored
    values, for a filter of times only (inside the caller's read transaction)."""
    since, until = time_range(where)
    results: list[tuple[int, int | None]] = []
    for (total, _), (start, end) in zip(rollup_counts(connection, bounds, where), bounds, strict=True):
        low, high = max(start, since), min(end, until)
        results.append((total, scalar(connection, UNIQUE_VALUES, (number, low, high)) if low < high else 0))
    return results


def _declared_condition_counts(
    connection: apsw.Connection,
    bounds: list[tuple[int, int]],
    where: EventFilter,
    number: int,
    match: PropertyMatch,
) -> list[tuple[int, int | None]]:
    """Bucket counts for one condition on a declared property and times: one read of the
    matching values' timestamps over the whole range, each counted in its bucket (`!=`:
    the rollups' counts less equality's), inside the caller's read transaction."""
    since, until = time_range(where)
    low, high = max(bounds[0][0], since), min(bounds[-1][1], until)
    counts = [0] * len(bounds)
    if low < high:
        starts = [start for start, _ in bounds]
        sql, params = declared_timestamps(number, match, low, high)
        for (ts,) in connection.execute(sql, params):
            counts[bisect.bisect_right(starts, cast(int, ts)) - 1] += 1
    if match.op == "!=":
        every = rollup_counts(connection, bounds, replace(where, where=()))
        counts = [total - equal for (total, _), equal in zip(every, counts, strict=True)]
    return [(count, None) for count in counts]
