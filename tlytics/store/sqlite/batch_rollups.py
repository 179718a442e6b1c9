"""The rollups of one insert's rows, counted in Python once per batch, for the SQLite writer's
direct insert (see tlytics.store.sqlite.writes): no temporary table to group in SQLite.

The rows come sorted by timestamp, so each 15-minute bucket is one run of them (found by
bisection) and a key's first row holds its earliest timestamp and its last row its latest.
Everything per row is done by C loops (map, Counter, dict), nothing in Python per row: the
SQLite grouping they replace sorted every row of the batch again.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from tlytics.store.sqlite.schema import BUCKET_US

# The rollups of the new rows, added to those stored (the same upserts as the SQL grouping's).
ROLL_UP_COUNTED = (
    "INSERT INTO rollup_15m (key, bucket, count) VALUES (?, ?, ?)"
    " ON CONFLICT (bucket, key) DO UPDATE SET count = count + excluded.count"
)
KEY_STATS_COUNTED = (
    "INSERT INTO key_stats (key, count, first_ts, last_ts) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE"
    " SET count = count + excluded.count, first_ts = min(first_ts, excluded.first_ts),"
    " last_ts = max(last_ts, excluded.last_ts)"
)

_KEY = itemgetter(1)
_TIMESTAMP = itemgetter(2)


def sort_by_time(rows: list[Sequence[Any]]) -> None:
    """Sort rows (key at 1, timestamp µs at 2) by timestamp, in place: stable, and about one
    comparison per row for rows already in order (a spool's usually are), so the events'
    b-trees take them near one another and the counting below holds."""
    rows.sort(key=_TIMESTAMP)


def counted_rollups(
    rows: Sequence[Sequence[Any]],
) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int, int]]]:
    """(rollup_15m rows (key, bucket, count), key_stats rows (key, count, first ts, last ts))
    of `rows` sorted by timestamp (`sort_by_time`)."""
    keys: list[str] = list(map(_KEY, rows))
    timestamps: list[int] = list(map(_TIMESTAMP, rows))
    buckets: list[tuple[str, int, int]] = []
    start, end = 0, len(timestamps)
    while start < end:
        # floor division, as BUCKET_SQL: a negative timestamp's bucket is below zero
        bucket = timestamps[start] // BUCKET_US
        stop = bisect_left(timestamps, (bucket + 1) * BUCKET_US, start, end)
        buckets.extend((key, bucket, count) for key, count in Counter(keys[start:stop]).items())
        start = stop
    last_ts = dict(zip(keys, timestamps, strict=True))
    first_ts = dict(zip(reversed(keys), reversed(timestamps), strict=True))
    per_key = Counter(keys)
    key_stats = [(key, count, first_ts[key], last_ts[key]) for key, count in per_key.items()]
    return buckets, key_stats
