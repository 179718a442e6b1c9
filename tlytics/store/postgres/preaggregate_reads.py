"""Reads answered from the hourly counts of a declared property of few values on PostgreSQL
(tlytics.store.postgres.preaggregates): a breakdown, and events per bucket for one condition on
the property, each with or without a key filter; the SQLite store's
tlytics.store.sqlite.preaggregate_reads in one statement each. A question that names no key
reads the counts summed over the keys (`property_counts_all_keys`); with `key=`, the keys' own
(`property_counts`).

The whole hours of a range come from the counts (every node's rows summed); its edges that cut
an hour (a range that starts at 10:20, a day in a time zone half an hour off UTC) are read per
event through the property's stored values, so every answer is the one the JSON path gives
(tests/test_postgres_preaggregates.py compares them).
"""

from __future__ import annotations

import bisect
from typing import Any, cast

from tlytics.store.base import EventFilter, PropertyMatch
from tlytics.store.postgres.declared_reads import _KIND_NAME
from tlytics.store.postgres.filters import _value_condition
from tlytics.store.postgres.preaggregates import HOUR_US
from tlytics.store.postgres.schema import BUCKET_US, Connection
from tlytics.timefmt import MAX_US, MIN_US

_QUARTERS = HOUR_US // BUCKET_US  # rollup buckets per hour


def counted_properties(connection: Connection) -> dict[str, int]:
    """The declared properties whose counts answer reads: path -> number (read it inside the
    read that uses it: a property stops being counted at most once)."""
    rows = connection.execute("SELECT path, number FROM declared_properties WHERE complete AND counted").fetchall()
    return {str(path): cast(int, number) for path, number in rows}


def complete_and_counted(connection: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """The complete declared properties, and those of them whose counts answer reads (path ->
    number each), in one read."""
    rows = connection.execute("SELECT path, number, counted FROM declared_properties WHERE complete").fetchall()
    complete = {str(path): cast(int, number) for path, number, _ in rows}
    return complete, {str(path): cast(int, number) for path, number, counted in rows if counted}


def time_range(where: EventFilter) -> tuple[int, int]:
    """The filter's times as [low, high)."""
    low = MIN_US if where.since_us is None else where.since_us
    high = MAX_US + 1 if where.until_us is None else where.until_us
    return low, high


def _split(low: int, high: int) -> tuple[int, int, tuple[int, int], tuple[int, int]]:
    """[low, high) as its whole hours [first, last) and the edges before and after them (empty
    ranges where there are none)."""
    if low >= high:
        return 0, 0, (0, 0), (0, 0)
    first = -(-low // HOUR_US)  # ceil
    last = high // HOUR_US
    if first >= last:
        return 0, 0, (low, high), (0, 0)
    return first, last, (low, first * HOUR_US), (last * HOUR_US, high)


def _of_keys(where: EventFilter) -> tuple[str, list[Any]]:
    return (" AND key = ANY(%s::text[])", [list(where.keys)]) if where.keys else ("", [])


def _counts_table(where: EventFilter) -> str:
    """The counts that answer a question about the filter's keys (none named: every key's, summed)."""
    return "property_counts" if where.keys else "property_counts_all_keys"


def _edge_values(number: int, where: EventFilter, condition: tuple[str, list[Any]], edge: str) -> tuple[str, list[Any]]:
    """SQL counting the values of property `number` in range `edge` (b.<edge>_low, b.<edge>_high)
    of the keys that meet `condition`."""
    keys_sql, key_params = _of_keys(where)
    joined = " JOIN events e ON e.ts = pv.ts AND e.id = pv.id" if where.keys else ""
    sql, params = condition
    return (
        f"(SELECT count(*) FROM property_values pv{joined} WHERE pv.property = %s AND pv.ts >= b.{edge}_low"
        f" AND pv.ts < b.{edge}_high{keys_sql}{' AND ' + sql if sql else ''})",
        [number, *key_params, *params],
    )


def condition_counts(
    connection: Connection, bounds: list[tuple[int, int]], where: EventFilter, number: int, match: PropertyMatch
) -> list[tuple[int, int | None]]:
    """Events per bucket for keys, times and one condition on counted property `number`: the
    values the condition selects among the property's listed values (at most
    MAX_COUNTED_VALUES: it is evaluated once per value), then the counts of those values in the
    whole hours of every bucket and their stored values in its edges (`!=`: the rollups' and
    the events' counts less equality's). Call inside one snapshot (four statements)."""
    no_jit(connection)
    since, until = time_range(where)
    split = [_split(max(start, since), min(end, until)) for start, end in bounds]
    keys_sql, key_params = _of_keys(where)
    counts = [0] * len(bounds)
    covered = [(first, last) for first, last, _, _ in split if first < last]
    edges = [edge for _, _, before, after in split for edge in (before, after)]
    if not covered and not any(low < high for low, high in edges):
        return [(count, None) for count in counts]
    # The values the condition keeps, by equality (every stored value of a counted property
    # is listed, in the same transaction that stores it).
    condition = ("", []) if match.op == "*" else _listed_values(connection, number, _value_condition(match))
    if covered:
        sql, params = condition
        per_hour = connection.execute(
            f"SELECT hour, sum(count)::bigint FROM {_counts_table(where)} WHERE property = %s AND hour >= %s AND hour < %s"
            f"{keys_sql}{' AND ' + sql if sql else ''} GROUP BY hour",
            [number, covered[0][0], covered[-1][1], *key_params, *params],
        ).fetchall()
        _add_hours(counts, split, [(cast(int, hour), cast(int, n)) for hour, n in per_hour])
        if match.op == "!=":
            # Grouped by hour (floor division), not by bucket: a quarter of the groups.
            every = connection.execute(
                f"SELECT bucket / {_QUARTERS} - (bucket < 0 AND mod(bucket, {_QUARTERS}) <> 0)::int,"
                " sum(count)::bigint FROM rollup_15m WHERE bucket >= %s AND bucket < %s"
                f"{keys_sql} GROUP BY 1",
                [covered[0][0] * _QUARTERS, covered[-1][1] * _QUARTERS, *key_params],
            ).fetchall()
            equal = counts
            counts = [0] * len(bounds)
            _add_hours(counts, split, [(cast(int, hour), cast(int, n)) for hour, n in every])
            counts = [total - same for total, same in zip(counts, equal, strict=True)]
    if any(low < high for low, high in edges):
        parts = [_edge_values(number, where, condition, edge) for edge in ("before", "after")]
        total = " + ".join(part for part, _ in parts)
        if match.op == "!=":
            every_edge = [
                (f"(SELECT count(*) FROM events WHERE ts >= b.{edge}_low AND ts < b.{edge}_high{keys_sql})", key_params)
                for edge in ("before", "after")
            ]
            total = f"{' + '.join(part for part, _ in every_edge)} - ({total})"
            parts = every_edge + parts
        columns: list[list[int]] = [[], [], [], []]
        for _, _, before, after in split:
            for column, value in zip(columns, (*before, *after), strict=True):
                column.append(value)
        rows = connection.execute(
            f"SELECT {total} FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])"
            " WITH ORDINALITY AS b(before_low, before_high, after_low, after_high, i) ORDER BY b.i",
            [*(p for _, part in parts for p in part), *columns],
        ).fetchall()
        counts = [count + int(cast(Any, n)) for count, (n,) in zip(counts, rows, strict=True)]
    return [(count, None) for count in counts]


def _listed_values(connection: Connection, number: int, condition: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    """`condition` on (kind, val) as the listed values of property `number` (at most
    MAX_COUNTED_VALUES) that meet it, named by equality: the counts are then read through
    their (kind, val) index and the condition (a text search for `~`) is evaluated once per
    value, not once per count row or stored value. A statement of its own: inside the read of
    the counts, PostgreSQL cannot tell how few values a text search keeps, and read every count
    of the range, searching each one's text."""
    sql, params = condition
    rows = connection.execute(
        f"SELECT kind, array_agg(val) FROM property_count_values WHERE property = %s AND {sql} GROUP BY kind",
        [number, *params],
    ).fetchall()
    if not rows:
        return "false", []
    named = " OR ".join('(kind = %s AND val = ANY(%s::text[] COLLATE "C"))' for _ in rows)
    return f"({named})", [value for row in rows for value in row]


def _add_hours(counts: list[int], split: list[tuple[int, int, Any, Any]], per_hour: list[tuple[int, int]]) -> None:
    """Add each hour's count to the bucket whose whole hours hold it (the buckets' hours are
    disjoint and in order; a bucket without whole hours is skipped)."""
    covered = [(first, last, index) for index, (first, last, _, _) in enumerate(split) if first < last]
    firsts = [first for first, _, _ in covered]
    for hour, n in per_hour:
        at = bisect.bisect_right(firsts, hour) - 1
        if at >= 0 and covered[at][0] <= hour < covered[at][1]:
            counts[covered[at][2]] += n


def no_jit(connection: Connection) -> None:
    """No JIT compilation for this transaction's reads: their cost estimates (many small index
    reads) pass jit_above_cost, and compiling took longer (about 150 ms) than the reads."""
    connection.execute("SELECT set_config('jit', 'off', true)")


def counted_breakdown(
    connection: Connection, number: int, where: EventFilter, limit: int
) -> tuple[list[tuple[Any, ...]], int]:
    """The top (kind name, grouped value, count) rows of counted property `number` over the
    filter's times and keys, ordered as the JSON breakdown orders them, and how many events
    there have it: the counts of its whole hours and the stored values of its edges, grouped by
    kind and value."""
    no_jit(connection)
    first, last, before, after = _split(*time_range(where))
    keys_sql, key_params = _of_keys(where)
    joined = " JOIN events e ON e.ts = pv.ts AND e.id = pv.id" if where.keys else ""
    parts = [
        f"SELECT kind, val, count AS n FROM {_counts_table(where)} WHERE property = %s AND hour >= %s AND hour < %s"
        + keys_sql
    ]
    params: list[Any] = [number, first, last, *key_params]
    for low, high in (before, after):
        if low < high:
            parts.append(
                f"SELECT pv.kind, pv.val, count(*) FROM property_values pv{joined}"
                f" WHERE pv.property = %s AND pv.ts >= %s AND pv.ts < %s{keys_sql} GROUP BY 1, 2"
            )
            params += [number, low, high, *key_params]
    # A deletion's rows may leave a value's sum at 0 (a node's rows go negative): not shown.
    rows = connection.execute(
        f"SELECT kind_name, val, n, sum(n) OVER () FROM (SELECT {_KIND_NAME} AS kind_name, val, sum(n)::bigint AS n"
        f" FROM ({' UNION ALL '.join(parts)}) counted GROUP BY kind, val HAVING sum(n) > 0) grouped"
        ' ORDER BY n DESC, kind_name COLLATE "C",'
        " CASE WHEN kind_name = 'number' THEN tlytics_number_value(val) END, val LIMIT %s",
        [*params, max(limit, 1)],  # one row at least: it carries the sum
    ).fetchall()
    return [row[:3] for row in rows[:limit]], cast(int, rows[0][3]) if rows else 0
