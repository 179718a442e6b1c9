"""Issue 21's dashboard questions on PostgreSQL against SQLite, same run, same data ("PostgreSQL
at most twice SQLite"): bench.view's events spread over `--days`, `data.path` (50 values,
counted), `data.amount` (1,000 values) and `data.user_id` (100,000 values) declared on both
stores from the first insert; each question asked through the store classes as the server asks
it (the server's own overhead is the same on both), each over the last 30 days but the `/view`
page (over every event, as bench.view asks it).

    python -m bench.postgres_vs_sqlite --events 1000000 --days 60

`--keep DIR` fills a SQLite file and a PostgreSQL cluster in DIR once and leaves the cluster
running (its URL in DIR/url, its directory in DIR/cluster); a later run with the same DIR asks
the questions of those stores again (to try a change to the reads without refilling). Stop it
with `pg_ctl -D "$(cat DIR/cluster)/data" stop` (as the cluster's owner), then remove both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.postgres_preaggregates import p50_ms
from bench.view import BASE_US, event_data
from tlytics.ids import uuid7_int
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
DAY_US = 86_400_000_000
DECLARED = ["path", "amount", "user_id"]
PAGE_SIZE = 10


def questions(end_us: int) -> dict[str, Callable[[Any], object]]:
    """Name -> every store read the server makes for the question (SQLiteStore or
    PostgresReader), its answers together."""
    since = end_us - 30 * DAY_US
    starts = [since + day * DAY_US for day in range(30)]
    window = EventFilter(since_us=since, until_us=end_us)

    def where(text: str, *, everything: bool = False) -> EventFilter:
        if everything:
            return EventFilter(where=(where_condition(text),))
        return EventFilter(since_us=since, until_us=end_us, where=(where_condition(text),))

    greater, contains = where("data.amount>990"), where("data.path~ducts/4")
    return {
        "stats_where_amount_greater_30d": lambda store: store.bucket_counts(starts, end_us, greater, None),
        "stats_breakdown_path_30d": lambda store: (
            store.bucket_counts(starts, end_us, window, None),
            store.breakdown(window, "path", 10),
        ),
        "view_where_amount_greater_first_page": lambda store: store.page(
            1, PAGE_SIZE, where=where("data.amount>990", everything=True)
        ),
        "stats_where_path_contains_30d": lambda store: store.bucket_counts(starts, end_us, contains, None),
        "stats_unique_user_30d": lambda store: (
            store.bucket_counts(starts, end_us, window, None),
            store.unique_counts(starts, end_us, window, "user_id"),
        ),
        "funnel_3_steps_7d_30d": lambda store: store.funnel(window, ["key_0", "key_1", "key_2"], "user_id", 7 * DAY_US),
    }


def fill(sqlite: SQLiteStore, url: str, events: int, step_us: int) -> None:
    """The same events into both stores, in batches as the writer inserts them."""
    from tlytics.store.postgres import PostgresWriter

    writer = PostgresWriter(url, node="bench", declared_properties=DECLARED)
    for start in range(0, events, 50_000):
        rows = [
            (uuid7_int().to_bytes(16, "big"), f"key_{n % 20}", BASE_US + n * step_us, BASE_US, event_data(n))
            for n in range(start, min(start + 50_000, events))
        ]
        sqlite.insert(rows)
        writer.insert(rows)
    writer.close()


def compare(sqlite: SQLiteStore, url: str, end_us: int, repeats: int) -> dict[str, dict[str, float]]:
    """Each question's answers checked equal, then its p50 on each store, asked in turn."""
    from tlytics.store.postgres import PostgresReader

    reader = PostgresReader(url)
    try:
        asked = questions(end_us)
        for name, read in asked.items():
            assert read(sqlite) == read(reader), name  # the same answers
        figures: dict[str, dict[str, float]] = {}
        for name, read in asked.items():
            sqlite_ms = p50_ms(lambda read=read: read(sqlite), repeats)  # type: ignore[misc]
            postgresql_ms = p50_ms(lambda read=read: read(reader), repeats)  # type: ignore[misc]
            figures[name] = {
                "sqlite_ms": round(sqlite_ms, 1),
                "postgresql_ms": round(postgresql_ms, 1),
                "postgresql_to_sqlite": round(postgresql_ms / sqlite_ms, 2),
            }
        return figures
    finally:
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="fill stores in this directory once, leave the cluster running")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import psycopg

    from tests.postgres_cluster import PostgresCluster

    step_us = args.days * DAY_US // args.events
    end_us = BASE_US + args.events * step_us
    kept: Path | None = args.keep
    if kept is not None and (kept / "url").exists():
        sqlite = SQLiteStore(kept / "s.db", declared_properties=DECLARED)
        try:
            figures = compare(sqlite, (kept / "url").read_text(), end_us, args.repeats)
        finally:
            sqlite.close()
        print(json.dumps({"events": args.events, "days": args.days, "figures": figures}, indent=2))
        return
    cluster = PostgresCluster(fsync=True)
    work = kept or Path(cluster.directory)
    work.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start()
        url = cluster.create_database("dashboard")
        sqlite = SQLiteStore(work / "s.db", declared_properties=DECLARED)
        try:
            fill(sqlite, url, args.events, step_us)
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("VACUUM (ANALYZE)")
            figures = compare(sqlite, url, end_us, args.repeats)
        finally:
            sqlite.close()
    except BaseException:
        cluster.remove()
        raise
    if kept is None:
        cluster.remove()
    else:
        (kept / "cluster").write_text(str(cluster.directory))
        (kept / "url").write_text(url)
    print(json.dumps({"events": args.events, "days": args.days, "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
