"""`GET /view` on a big store: fills a store with N events straight through the Store
interface (not HTTP, to save time), starts the real server on it, and times the first page,
a deep page, and the total; then the richer questions of issue 14 (unique_total, compare=previous, a `>`
and a `~` filter, a three-step funnel).

    python -m bench.view                  # 10M events (about 1.5 GB on disk, a minute or two)
    python -m bench.view --events 1000000
    python -m bench.view --store both     # SQLite, then PostgreSQL (a cluster of its own), same
                                          # data, with each figure's ratio PostgreSQL / SQLite
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.ingest import RESULTS, ROOT, free_port, server_command, wait_healthy
from tlytics.ids import uuid7_int
from tlytics.store import SQLiteStore, StoreWriter

BASE_US = 1_700_000_000_000_000


def fill(
    db_path: Path | None,
    events: int,
    batch: int = 50_000,
    store_url: str | None = None,
    *,
    step_us: int = 1000,
    unique_properties: tuple[str, ...] | None = None,
) -> float:
    """Fill a store with `events` events `step_us` apart from BASE_US; the seconds it took."""
    store: StoreWriter
    if store_url is not None:
        from tlytics.store.postgres import PostgresWriter

        store = PostgresWriter(store_url, node="bench", unique_properties=unique_properties)
    else:
        assert db_path is not None
        store = SQLiteStore(db_path, unique_properties=unique_properties)
    started = time.perf_counter()
    base_us = BASE_US
    for start in range(0, events, batch):
        rows = [
            (
                uuid7_int().to_bytes(16, "big"),
                f"key_{n % 20}",
                base_us + n * step_us,
                base_us + n * step_us,
                event_data(n),
            )
            for n in range(start, min(start + batch, events))
        ]
        store.insert(rows)
    store.close()
    return time.perf_counter() - started


USERS = 100_000


def event_data(n: int) -> str:
    """Event n's data: 100,000 users, each with three keys in a row (key_k, key_k+1, key_k+2
    for its own k, again every 300,000 events), so a funnel of key_0, key_1, key_2 has users
    reaching one, two or three steps; an amount from 0 to 999, 50 paths."""
    return (
        f'{{"user_id":"u{n // 3 % USERS}","amount":{n % 1000},"path":"/products/{n % 50}",'
        '"referrer":"https://example.com/"}'
    )


def _iso(n: int) -> str:
    """The timestamp of the n-th filled event (one per millisecond from BASE_US)."""
    from tlytics.timefmt import format_rfc3339_us

    return format_rfc3339_us(BASE_US + max(n, 0) * 1000)


def middle_cursor(url: str, events: int) -> str:
    """A cursor half way down the store, found with an `until` seek."""
    with urllib.request.urlopen(f"{url}/view?until={_iso(events // 2)}&page_size=10", timeout=60) as response:
        return str(json.loads(response.read())["next_cursor"])


def time_get(url: str, repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p99_ms": samples[int(len(samples) * 0.99) - 1]}


def question_figures(url: str, events: int) -> dict[str, object]:
    """Issue 14, part 3: distinct users over the whole range, the previous period, a `>` and a
    `~` filter, and a three-step funnel, over every event filled."""
    whole = f"since={_iso(0)}&until={_iso(events)}"
    daily = f"{url}/stats?interval=day&{whole}"
    funnel = f"{url}/funnel?steps=key_0,key_1,key_2&by=data.user_id&within=7d&{whole}"
    return {
        "stats_unique_total": time_get(f"{daily}&unique=data.user_id", 3),
        "stats_compare_previous": time_get(f"{daily}&compare=previous", 5),
        "view_where_greater": time_get(f"{url}/view?where=data.amount%3E990", 5),
        "stats_where_greater": time_get(f"{daily}&where=data.amount%3E990", 3),
        "stats_where_contains": time_get(f"{daily}&where=data.path~ducts/4", 3),
        "funnel_3_steps": time_get(funnel, 3),
    }


def measure(server_args: list[str], args: argparse.Namespace, fill_s: float) -> dict[str, object]:
    """Start the real server on a filled store and time its reads over HTTP."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        server_command(port, *server_args, "--log-level", "warning"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(url, process, timeout_s=120)
        return {
            "events": args.events,
            "fill_rows_per_s": args.events / fill_s,
            "view_first_page": time_get(f"{url}/view", args.repeats),
            "view_first_page_1000": time_get(f"{url}/view?page_size=1000", max(20, args.repeats // 10)),
            "view_page_100": time_get(f"{url}/view?page=100", args.repeats),
            "view_deep_page_middle": time_get(f"{url}/view?page={args.events // 20}", 5),
            "view_cursor_middle": time_get(f"{url}/view?cursor={middle_cursor(url, args.events)}", args.repeats),
            "stats_daily_30_days": time_get(
                f"{url}/stats?interval=day&since={_iso(args.events - 30 * 86_400_000)}&until={_iso(args.events)}", 5
            ),
            "keys": time_get(f"{url}/keys", 3),
            **question_figures(url, args.events),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="sqlite")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-view-bench-"))
    results: dict[str, object] = {}
    try:
        if args.store in ("sqlite", "both"):
            fill_s = fill(workdir / "view.db", args.events)
            results["sqlite"] = measure(["--db", str(workdir / "view.db")], args, fill_s)
            (workdir / "view.db").unlink()
        if args.store in ("postgresql", "both"):
            sys.path.insert(0, str(ROOT))
            from tests.postgres_cluster import PostgresCluster

            cluster = PostgresCluster(fsync=True)
            try:
                cluster.start()
                store_url = cluster.create_database("view")
                fill_s = fill(None, args.events, store_url=store_url)
                # What autovacuum does soon after a bulk load (PostgreSQL 13+ vacuums after
                # inserts too): the visibility map lets counts over index ranges skip the heap.
                import psycopg

                with psycopg.connect(store_url, autocommit=True) as connection:
                    connection.execute("VACUUM (ANALYZE)")
                results["postgresql"] = measure(
                    ["--store", store_url, "--spool", str(workdir / "pg.spool")], args, fill_s
                )
            finally:
                cluster.remove()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if "sqlite" in results and "postgresql" in results:
        sqlite, postgres = results["sqlite"], results["postgresql"]
        assert isinstance(sqlite, dict) and isinstance(postgres, dict)
        results["postgresql_to_sqlite_p50"] = {
            name: round(postgres[name]["p50_ms"] / sqlite[name]["p50_ms"], 2)
            for name, figure in sqlite.items()
            if isinstance(figure, dict)
        }
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"view-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
