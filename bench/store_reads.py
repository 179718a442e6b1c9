"""The reads behind `GET /view`, `/stats` and `/keys`, timed on the store itself (no HTTP) for
SQLite and for PostgreSQL filled with the same N events in the same run: PostgreSQL's figure
and its ratio to SQLite's. Starts its own PostgreSQL cluster (fsync on), as the tests do.

    python -m bench.store_reads                     # 1M events
    python -m bench.store_reads --events 10000000   # the issue's size (about 20 minutes)

Prints a table and writes bench/results/store-reads-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.ingest import RESULTS
from tests.postgres_cluster import PostgresCluster
from tlytics.ids import uuid7_int
from tlytics.store import EventFilter, SQLiteStore, StoreReader, StoreWriter
from tlytics.store.postgres import PostgresReader, PostgresWriter

BASE_US = 1_700_000_000_000_000
DAY_US = 86_400_000_000
DATA = '{"user_id":"u1","path":"/products/1","referrer":"https://example.com/"}'


def fill(writers: list[StoreWriter], events: int, batch: int = 50_000) -> list[float]:
    """The same rows into every writer (one event per ms from BASE_US, 20 keys); rows/s of each."""
    seconds = [0.0] * len(writers)
    for start in range(0, events, batch):
        rows = [
            (uuid7_int().to_bytes(16, "big"), f"key_{n % 20}", BASE_US + n * 1000, BASE_US + n * 1000, DATA)
            for n in range(start, min(start + batch, events))
        ]
        for index, writer in enumerate(writers):
            started = time.perf_counter()
            writer.insert(rows)
            seconds[index] += time.perf_counter() - started
    return [events / s for s in seconds]


def timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    call()  # warm: caches and this thread's connection
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "max_ms": samples[-1]}


def reads(reader: StoreReader, events: int, repeats: int) -> dict[str, dict[str, float]]:
    middle = reader.page(1, 10, where=EventFilter(until_us=BASE_US + events // 2 * 1000)).next_position
    last_us = BASE_US + events * 1000
    days = [last_us - (30 - d) * DAY_US for d in range(30)]
    lookups = [uuid7_int().to_bytes(16, "big") for _ in range(1000)]  # distinct ids, as replay asks
    return {
        "first_page": timed(lambda: reader.page(1, 10), repeats),
        "first_page_1000": timed(lambda: reader.page(1, 1000), max(5, repeats // 10)),
        "page_100": timed(lambda: reader.page(100, 10), repeats),
        "deep_page_middle": timed(lambda: reader.page(events // 20, 10), 3),
        "cursor_middle": timed(lambda: reader.page(1, 10, after=middle), repeats),
        "filtered_key_first_page": timed(lambda: reader.page(1, 10, where=EventFilter(keys=("key_3",))), 5),
        "stats_daily_30_days": timed(lambda: reader.bucket_counts(days, last_us, EventFilter(), None), 5),
        "keys": timed(reader.keys_summary, 5),
        "lookup_1000_ids": timed(lambda: reader.existing_ids(lookups), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-store-reads-"))
    cluster = PostgresCluster(fsync=True)
    try:
        cluster.start()
        sqlite = SQLiteStore(workdir / "reads.db")
        postgres_writer = PostgresWriter(cluster.url, node="bench")
        fill_rates = fill([sqlite, postgres_writer], args.events)
        postgres_writer.close()
        # Planner statistics and the visibility map, as autovacuum would make after a bulk load.
        with psycopg.connect(cluster.url, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
        postgres = PostgresReader(cluster.url)
        results: dict[str, Any] = {
            "events": args.events,
            "fill_rows_per_s": {"sqlite": fill_rates[0], "postgresql": fill_rates[1]},
            "sqlite": reads(sqlite, args.events, args.repeats),
            "postgresql": reads(postgres, args.events, args.repeats),
        }
        postgres.close()
        sqlite.close()
    finally:
        cluster.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.events:,} events; fill rows/s: SQLite {fill_rates[0]:,.0f}, PostgreSQL {fill_rates[1]:,.0f}")
    print(f"{'read (p50 ms)':<26}{'SQLite':>10}{'PostgreSQL':>12}{'ratio':>8}")
    for name, figures in results["postgresql"].items():
        lite, pg = results["sqlite"][name]["p50_ms"], figures["p50_ms"]
        print(f"{name:<26}{lite:>10.2f}{pg:>12.2f}{pg / lite:>8.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"store-reads-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
