"""The reads behind `GET /view`, `/stats` and `/keys`, timed on the store itself (no HTTP) for
SQLite and for PostgreSQL filled with the same N events in the same run: PostgreSQL's figure
and its ratio to SQLite's. Starts its own PostgreSQL cluster (fsync on), as the tests do.

    python -m bench.store_reads                     # 1M events
    python -m bench.store_reads --events 10000000   # the issue's size (about 20 minutes)
    python -m bench.store_reads --spread-days 60    # the events spread over 60 days to now

The events end now (PostgreSQL partitions the months near now); at the end, retention of the
oldest half of them is timed on both stores (PostgreSQL drops whole month partitions).

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

DAY_US = 86_400_000_000
DATA = '{"user_id":"u1","path":"/products/1","referrer":"https://example.com/"}'


class Timeline:
    """Where the n-th event is: `events` evenly from `spread_days` (or one per ms) before now."""

    def __init__(self, events: int, spread_days: float | None) -> None:
        self.step_us = 1000 if spread_days is None else max(1, int(spread_days * DAY_US / events))
        self.base_us = time.time_ns() // 1000 - events * self.step_us

    def ts(self, n: int) -> int:
        return self.base_us + n * self.step_us


def fill(writers: list[StoreWriter], events: int, timeline: Timeline, batch: int = 50_000) -> list[float]:
    """The same rows into every writer (20 keys); rows/s of each."""
    seconds = [0.0] * len(writers)
    for start in range(0, events, batch):
        rows = [
            (uuid7_int().to_bytes(16, "big"), f"key_{n % 20}", timeline.ts(n), timeline.ts(n), DATA)
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


def reads(reader: StoreReader, events: int, timeline: Timeline, repeats: int) -> dict[str, dict[str, float]]:
    middle = reader.page(1, 10, where=EventFilter(until_us=timeline.ts(events // 2))).next_position
    last_us = timeline.ts(events)
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


def retention(writer: StoreWriter, cutoff_us: int) -> int:
    """Every event before `cutoff_us` deleted, as the server's retention does (2,000 at a time)."""
    deleted = 0
    while (chunk := writer.delete_matching(EventFilter(until_us=cutoff_us), max_rows=2000, remember_ids=False)) > 0:
        deleted += chunk
    return deleted


def timed_once(call: Callable[[], Any]) -> dict[str, float]:
    started = time.perf_counter()
    call()
    elapsed_ms = (time.perf_counter() - started) * 1000
    return {"p50_ms": elapsed_ms, "max_ms": elapsed_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--spread-days", type=float, default=None, help="default: one event per ms")
    args = parser.parse_args()
    timeline = Timeline(args.events, args.spread_days)
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-store-reads-"))
    cluster = PostgresCluster(fsync=True)
    try:
        cluster.start()
        sqlite = SQLiteStore(workdir / "reads.db")
        postgres_writer = PostgresWriter(cluster.url, node="bench")
        fill_rates = fill([sqlite, postgres_writer], args.events, timeline)
        # Planner statistics and the visibility map, as autovacuum would make after a bulk load.
        with psycopg.connect(cluster.url, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
        postgres = PostgresReader(cluster.url)
        results: dict[str, Any] = {
            "events": args.events,
            "fill_rows_per_s": {"sqlite": fill_rates[0], "postgresql": fill_rates[1]},
            "sqlite": reads(sqlite, args.events, timeline, args.repeats),
            "postgresql": reads(postgres, args.events, timeline, args.repeats),
        }
        cutoff = timeline.ts(args.events // 2)
        results["sqlite"]["retention_half"] = timed_once(lambda: retention(sqlite, cutoff))
        results["postgresql"]["retention_half"] = timed_once(lambda: retention(postgres_writer, cutoff))
        postgres_writer.close()
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
