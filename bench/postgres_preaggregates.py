"""PostgreSQL's hourly counts of a declared property of few values against SQLite's, same run,
same data (issue 21, item 3: "PostgreSQL at most twice SQLite"): bench.view's events spread over
`--days`, `data.path` (50 values, counted) and `data.amount` (1,000 values, not) declared on
both stores from the first insert; a breakdown and one-condition daily charts over the last 30
days, with and without a key, through the store classes (the server's overhead is the same on
both). PostgreSQL is asked twice: with its counts, and with `counted` cleared on the same
database (the per-event path it took before them).

    python -m bench.postgres_preaggregates --events 1000000 --days 60
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.view import BASE_US, event_data
from tlytics.ids import uuid7_int
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
DAY_US = 86_400_000_000


def questions(end_us: int) -> dict[str, Callable[[Any], object]]:
    """Name -> a read of a store (SQLiteStore or PostgresReader), each over the last 30 days."""
    since = end_us - 30 * DAY_US
    starts = [since + day * DAY_US for day in range(30)]
    window = EventFilter(since_us=since, until_us=end_us)
    keyed = EventFilter(keys=("key_3",), since_us=since, until_us=end_us)

    def chart(where: EventFilter, text: str) -> Callable[[Any], object]:
        condition = EventFilter(keys=where.keys, since_us=since, until_us=end_us, where=(where_condition(text),))
        return lambda store: store.bucket_counts(starts, end_us, condition, None)

    return {
        "breakdown_path": lambda store: store.breakdown(window, "path", 10),
        "breakdown_path_key": lambda store: store.breakdown(keyed, "path", 10),
        "where_path_equal": chart(window, "data.path:/products/4"),
        "where_path_equal_key": chart(keyed, "data.path:/products/4"),
        "where_path_not_equal": chart(window, "data.path!=/products/4"),
        "where_path_contains": chart(window, "data.path~ducts/4"),
    }


def p50_ms(read: Callable[[], object], repeats: int) -> float:
    read()  # warm
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        read()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import psycopg

    from tests.postgres_cluster import PostgresCluster
    from tlytics.store.postgres import PostgresReader, PostgresWriter

    step_us = args.days * DAY_US // args.events
    end_us = BASE_US + args.events * step_us
    declared = ["path", "amount"]
    cluster = PostgresCluster(fsync=True)
    with tempfile.TemporaryDirectory() as work:
        try:
            cluster.start()
            url = cluster.create_database("preaggregates")
            sqlite = SQLiteStore(Path(work) / "s.db", declared_properties=declared)
            writer = PostgresWriter(url, node="bench", declared_properties=declared)
            for start in range(0, args.events, 50_000):
                rows = [
                    (uuid7_int().to_bytes(16, "big"), f"key_{n % 20}", BASE_US + n * step_us, BASE_US, event_data(n))
                    for n in range(start, min(start + 50_000, args.events))
                ]
                sqlite.insert(rows)
                writer.insert(rows)
            writer.close()
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("VACUUM (ANALYZE)")
            reader = PostgresReader(url)
            asked = questions(end_us)
            for name, read in asked.items():
                assert read(sqlite) == read(reader), name  # the same answers
            figures: dict[str, dict[str, float]] = {}
            for name, read in asked.items():
                figures[name] = {
                    "sqlite_ms": p50_ms(lambda read=read: read(sqlite), args.repeats),  # type: ignore[misc]
                    "postgresql_ms": p50_ms(lambda read=read: read(reader), args.repeats),  # type: ignore[misc]
                }
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("UPDATE declared_properties SET counted = false")  # the per-event path
            for name, read in asked.items():
                assert read(sqlite) == read(reader), name
                figures[name]["postgresql_before_ms"] = p50_ms(lambda read=read: read(reader), args.repeats)  # type: ignore[misc]
            reader.close()
            sqlite.close()
        finally:
            cluster.remove()
    table = {
        name: {
            "postgresql_to_sqlite": round(f["postgresql_ms"] / f["sqlite_ms"], 2),
            "postgresql_before_to_sqlite": round(f["postgresql_before_ms"] / f["sqlite_ms"], 2),
            "postgresql_after_to_before": round(f["postgresql_ms"] / f["postgresql_before_ms"], 3),
        }
        for name, f in figures.items()
    }
    print(json.dumps({"events": args.events, "days": args.days, "ratios": table}, indent=2))


if __name__ == "__main__":
    main()
