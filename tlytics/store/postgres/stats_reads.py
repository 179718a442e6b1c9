"""The PostgreSQL store's counts over time: events per bucket (from every node's 15-minute
rollups where the filter allows) and distinct values of a property (exactly, or estimated from
sketches), as query functions `fn(connection, *args)`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from tlytics.store.base import EventFilter, PropertyMatch, UniqueCounts
from tlytics.store.postgres.declared_reads import (
    complete_properties,
    declared_unique_counts,
    unique_values,
    uses_values_alone,
)
from tlytics.store.postgres.filters import _value_condition, property_value, sql_where
from tlytics.store.postgres.preaggregate_reads import complete_and_counted, condition_counts, time_range
from tlytics.store.postgres.reads import declared_now, scalar, transaction
from tlytics.store.postgres.schema import BUCKET_US, Connection
from tlytics.store.postgres.sketches import sketched_unique_counts, sketches_answer


def bucket_counts(
    connection: Connection, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
) -> list[tuple[int, int | None]]:
    bounds = list(itertools.pairwise([*starts_us, end_us]))
    if not where.where and unique_path is None:
        return rollup_counts(connection, bounds, where)
    if unique_path is None and len(where.where) == 1:
        path, match = where.where[0]
        # One snapshot: the property still counted (or complete), and its counts (or values).
        with transaction(connection, "stats read", statements=2):
            declared, counted = complete_and_counted(connection)
            if path in counted:
                return condition_counts(connection, bounds, where, counted[path], match)
            if path in declared and not where.keys:
                return declared_condition_counts(connection, bounds, where, declared[path], match)
    matching = sql_where(where, declared=declared_now(connection) if where.where else None)
    matching = matching.and_also("ts >= b.low AND ts < b.high")
    unique_sql, head = ", NULL::bigint", list[Any]()
    if unique_path is not None:
        value, head = property_value(unique_path)
        unique_sql = f", count(DISTINCT tlytics_value_key({value}))"
    # Every bucket in one statement: one round trip, one snapshot.
    query = (
        "SELECT counted.* FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS b(low, high, i)"
        f" CROSS JOIN LATERAL (SELECT count(*){unique_sql} FROM events{matching.sql}) counted ORDER BY b.i"
    )
    params = ([low for low, _ in bounds], [high for _, high in bounds], *head, *matching.params)
    with transaction(connection, "stats read"):
        rows = connection.execute(query, params).fetchall()
    return [(cast(int, n), None if unique is None else cast(int, unique)) for n, unique in rows]


def declared_condition_counts(
    connection: Connection, bounds: list[tuple[int, int]], where: EventFilter, number: int, match: PropertyMatch
) -> list[tuple[int, int | None]]:
    """Events per bucket for times and one condition on declared property `number` (no keys):
    its matching values over the whole range counted per bucket in one read of the values
    alone (every event has one value at most, stored beside it), not a join with the events per
    bucket (`!=`: the rollups' counts less equality's). Call inside one snapshot."""
    since, until = time_range(where)
    low, high = max(bounds[0][0], since), min(bounds[-1][1], until)
    counts = [0] * len(bounds)
    if low < high:
        selected, params = "property = %s AND ts >= %s AND ts < %s", [number, low, high]
        if match.op != "*":
            condition, condition_params = _value_condition(match)
            selected, params = f"{selected} AND {condition}", [*params, *condition_params]
        rows = connection.execute(
            f"SELECT width_bucket(ts, %s::bigint[]), count(*) FROM property_values WHERE {selected} GROUP BY 1",
            [[start for start, _ in bounds], *params],
        ).fetchall()
        for index, n in rows:
            counts[cast(int, index) - 1] += cast(int, n)  # from 1: ts >= the first start
    if match.op == "!=":
        every = rollup_counts(connection, bounds, replace(where, where=()))
        counts = [total - equal for (total, _), equal in zip(every, counts, strict=True)]
    return [(count, None) for count in counts]


def rollup_counts(
    connection: Connection, bounds: list[tuple[int, int]], where: EventFilter
) -> list[tuple[int, int | None]]:
    """Bucket counts from rollup_15m (every node's rows) for a filter of keys and times only:
    the whole 15-minute buckets inside each range come from the rollup, the ragged edges
    (less than 15 minutes each) are counted from the events."""
    of_keys = sql_where(EventFilter(keys=where.keys))  # rollup_15m has a key column too
    # Per bucket: its whole 15-minute buckets, and its ragged edges before and after them
    # (empty ranges where there are none).
    ranges: list[tuple[int, int, int, int, int, int]] = []
    for start, end in bounds:
        low = start if where.since_us is None else max(start, where.since_us)
        high = end if where.until_us is None else min(end, where.until_us)
        first_whole = -(-low // BUCKET_US)  # ceil
        last_whole = high // BUCKET_US
        if low >= high:
            ranges.append((0, 0, 0, 0, 0, 0))
        elif first_whole >= last_whole:
            ranges.append((0, 0, low, high, 0, 0))
        else:
            ranges.append((first_whole, last_whole, low, first_whole * BUCKET_US, last_whole * BUCKET_US, high))
    rollup = of_keys.and_also("bucket >= b.whole_low AND bucket < b.whole_high")
    before = of_keys.and_also("ts >= b.low AND ts < b.first_whole_us")
    after = of_keys.and_also("ts >= b.last_whole_us AND ts < b.high")
    query = (
        f"SELECT (SELECT coalesce(sum(count), 0) FROM rollup_15m{rollup.sql})"
        f" + (SELECT count(*) FROM events{before.sql}) + (SELECT count(*) FROM events{after.sql})"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])"
        " WITH ORDINALITY AS b(whole_low, whole_high, low, first_whole_us, last_whole_us, high, i) ORDER BY b.i"
    )
    columns = [list(column) for column in zip(*ranges, strict=True)] if ranges else [[]] * 6
    with transaction(connection, "stats read"):
        rows = connection.execute(query, (*rollup.params, *before.params, *after.params, *columns)).fetchall()
    return [(int(cast(Any, n)), None) for (n,) in rows]


def unique_count(connection: Connection, where: EventFilter, path: str) -> int:
    declared = declared_now(connection)
    if uses_values_alone(where, path, declared):
        with transaction(connection, "unique count read", statements=2):
            return unique_values(connection, declared[path], where)
    matching = sql_where(where, declared=declared)
    value, head = property_value(path)
    with transaction(connection, "unique count read"):
        return scalar(
            connection,
            f"SELECT count(DISTINCT tlytics_value_key({value})) FROM events{matching.sql}",
            (*head, *matching.params),
        )


def unique_counts(
    connection: Connection, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str
) -> UniqueCounts:
    if not where.where:
        # One snapshot: the sketches and the ragged edges agree (or the property is complete
        # and its values answer).
        with transaction(connection, "unique counts read", statements=4):
            if sketches_answer(connection, path, where):
                return sketched_unique_counts(connection, starts_us, end_us, where, path)
            declared = complete_properties(connection) if not where.keys else {}
            if path in declared:
                return declared_unique_counts(connection, starts_us, end_us, where, declared[path])
    # Exactly, from the events (`exact_unique_counts` asks a reader the same two questions).
    per_bucket = [unique or 0 for _, unique in bucket_counts(connection, starts_us, end_us, where, path)]
    return UniqueCounts(per_bucket=per_bucket, total=unique_count(connection, where, path))
