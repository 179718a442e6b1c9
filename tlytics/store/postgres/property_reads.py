"""The PostgreSQL store's answers about one property's values: a breakdown (its most frequent
values) and a funnel (how many actors, told apart by a property, reached each step), as query
functions `fn(connection, *args)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import cast

from tlytics.store.base import Breakdown, EventFilter
from tlytics.store.funnel import count_funnel, indexes_of
from tlytics.store.postgres.declared_reads import declared_breakdown, uses_values_alone
from tlytics.store.postgres.filters import property_value, sql_where
from tlytics.store.postgres.preaggregate_reads import counted_breakdown, counted_properties, no_jit, time_range
from tlytics.store.postgres.reads import declared_now, json_value, transaction
from tlytics.store.postgres.schema import Connection
from tlytics.store.postgres.stats_reads import rollup_counts


def breakdown(connection: Connection, where: EventFilter, path: str, limit: int) -> Breakdown:
    """Values are grouped by JSON kind and value, so `true` and `1`, or `"1"` and `1`, are
    told apart; ties are ordered as in SQLite (kind, then value)."""
    if not where.where:
        # One snapshot: the property still counted, its counts and the events in range.
        with transaction(connection, "breakdown read", statements=3):
            counted = counted_properties(connection)
            if path in counted:
                found, present = counted_breakdown(connection, counted[path], where, limit)
                (in_range, _), *_ = rollup_counts(connection, [time_range(where)], where)
                return Breakdown(
                    [(json_value(str(k), str(g)), cast(int, n)) for k, g, n in found], in_range, in_range - present
                )
    declared = declared_now(connection)
    if uses_values_alone(where, path, declared):
        with transaction(connection, "breakdown read", statements=2):
            found, in_range, lacking = declared_breakdown(connection, declared[path], where, limit)
        return Breakdown([(json_value(str(k), str(g)), cast(int, n)) for k, g, n in found], in_range, lacking)
    matching = sql_where(where, declared=declared)
    value, value_params = property_value(path)
    values = f"SELECT {value} AS v FROM events{matching.sql}"
    params = (*value_params, *matching.params)
    with transaction(connection, "breakdown read", statements=2):
        top = connection.execute(
            "SELECT kind, grouped, count(*) AS n FROM ("
            f" SELECT tlytics_value_kind(v) AS kind, tlytics_group_value(v) AS grouped FROM ({values}) present"
            " WHERE v IS NOT NULL) kinds GROUP BY kind, grouped"
            # Numbers in SQLite's order: 2^63 - 1 before the double 2^63 (as float8 they tie).
            ' ORDER BY n DESC, kind COLLATE "C",'
            " CASE WHEN kind = 'number' THEN tlytics_number_value(grouped) END,"
            ' grouped COLLATE "C" LIMIT %s',
            (*params, limit),
        ).fetchall()
        row = connection.execute(
            f"SELECT count(*), count(*) FILTER (WHERE v IS NULL) FROM ({values}) matching", params
        ).fetchone()
    total, missing = row or (0, 0)
    return Breakdown(
        top=[(json_value(str(kind), str(grouped)), cast(int, n)) for kind, grouped, n in top],
        total=cast(int, total),
        missing=cast(int, missing),
    )


def funnel(connection: Connection, where: EventFilter, steps: Sequence[str], by_path: str, within_us: int) -> list[int]:
    step_indexes = indexes_of(steps)
    matching = sql_where(replace(where, keys=tuple(step_indexes)), declared=declared_now(connection))
    value, head = property_value(by_path)
    query = (
        f"SELECT actor, key, ts FROM (SELECT tlytics_value_key({value}) AS actor, key, ts, id"
        f" FROM events{matching.sql}) steps WHERE actor IS NOT NULL ORDER BY ts, id"
    )
    with transaction(connection, "funnel read", statements=2):
        no_jit(connection)  # compiling its expressions took longer (about 120 ms) than they saved
        rows = connection.execute(query, (*head, *matching.params)).fetchall()
    return count_funnel(
        ((actor, step, cast(int, ts)) for actor, key, ts in rows for step in step_indexes[cast(str, key)]),
        len(steps),
        within_us,
    )
