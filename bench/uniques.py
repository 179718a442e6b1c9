"""`/stats?unique=data.user_id` over 30 days, counted exactly and from the HyperLogLog
sketches of `--unique-property` (issue 14), on N events spread evenly over 30 days (20 keys,
100,000 users: see bench.view.event_data).

    python -m bench.uniques                     # 10M events
    python -m bench.uniques --events 1000000

Figures: the writer's cost per event with one declared property (two fills of `--writer-events`
events, without and with, through the store interface as the writer calls it), the time the
writer takes to backfill the sketches of the N events, and the p50 of the daily 30-day query
with and without a key filter, exact (property not declared) then sketched, with the answers'
unique_total side by side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.ingest import RESULTS, ROOT, free_port, server_command, wait_healthy
from bench.view import BASE_US, fill, time_get
from tlytics.store import SQLiteStore
from tlytics.timefmt import format_rfc3339_us

DAYS = 30


def queries(url: str, events: int, step_us: int) -> dict[str, str]:
    whole = f"since={format_rfc3339_us(BASE_US)}&until={format_rfc3339_us(BASE_US + events * step_us)}"
    daily = f"{url}/stats?interval=day&unique=data.user_id&{whole}"
    return {
        "daily_30_days": daily,
        "daily_30_days_paris": f"{daily}&tz=Europe/Paris",
        "daily_30_days_one_key": f"{daily}&key=key_3",
        "daily_30_days_compare_previous": f"{daily}&compare=previous",
    }


def serve(store_args: list[str], extra: list[str], events: int, step_us: int, repeats: int) -> dict[str, object]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = server_command(port, *store_args)
    process = subprocess.Popen(
        [*command, *extra, "--log-level", "warning"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_healthy(url, process, timeout_s=600)
        figures: dict[str, object] = {}
        for name, query in queries(url, events, step_us).items():
            with urllib.request.urlopen(query, timeout=120) as response:
                answer = json.loads(response.read())
            figures[name] = {
                **time_get(query, repeats),
                "unique_total": answer["unique_total"],
                "unique_method": answer["unique_method"],
            }
        return figures
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--writer-events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if args.store == "postgresql":
        postgresql(args)
        return
    step_us = DAYS * 86_400_000_000 // args.events
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-uniques-bench-"))
    results: dict[str, object] = {"events": args.events, "days": DAYS}
    try:
        writer_step = DAYS * 86_400_000_000 // args.writer_events
        plain_s = fill(workdir / "plain.db", args.writer_events, step_us=writer_step, unique_properties=())
        sketched_s = fill(
            workdir / "sketched.db", args.writer_events, step_us=writer_step, unique_properties=("user_id",)
        )
        results["writer_us_per_event"] = {
            "without": plain_s / args.writer_events * 1e6,
            "with_one_property": sketched_s / args.writer_events * 1e6,
            "added": (sketched_s - plain_s) / args.writer_events * 1e6,
        }
        for name in ("plain.db", "sketched.db"):
            (workdir / name).unlink()
        db_path = workdir / "uniques.db"
        results["fill_s"] = fill(db_path, args.events, step_us=step_us, unique_properties=())
        results["exact"] = serve(["--db", str(db_path)], [], args.events, step_us, args.repeats)
        started = time.perf_counter()
        SQLiteStore(db_path, unique_properties=("user_id",)).close()
        results["backfill_s"] = time.perf_counter() - started
        size = db_path.stat().st_size
        declared = ["--unique-property", "data.user_id"]
        results["sketched"] = serve(["--db", str(db_path)], declared, args.events, step_us, args.repeats)
        results["db_bytes"] = size
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"uniques-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))


def postgresql(args: argparse.Namespace) -> None:
    """The same on PostgreSQL (a cluster of its own): exact, backfill, sketched."""
    sys.path.insert(0, str(ROOT))
    import psycopg

    from tests.postgres_cluster import PostgresCluster
    from tlytics.store.postgres import PostgresWriter

    step_us = DAYS * 86_400_000_000 // args.events
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-uniques-bench-"))
    results: dict[str, object] = {"store": "postgresql", "events": args.events, "days": DAYS}
    cluster = PostgresCluster(fsync=True)
    try:
        cluster.start()
        writer_step = DAYS * 86_400_000_000 // args.writer_events
        costs = {}
        for name, declared_properties in (("without", None), ("with_one_property", ("user_id",))):
            database = cluster.create_database(f"writer_{name}")
            costs[name] = (
                fill(
                    None,
                    args.writer_events,
                    store_url=database,
                    step_us=writer_step,
                    unique_properties=declared_properties,
                )
                / args.writer_events
                * 1e6
            )
            cluster.drop_database(f"writer_{name}")
        results["writer_us_per_event"] = {**costs, "added": costs["with_one_property"] - costs["without"]}
        url = cluster.create_database("uniques")
        results["fill_s"] = fill(None, args.events, store_url=url, step_us=step_us)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("VACUUM (ANALYZE)")
        store_args = ["--store", url, "--spool", str(workdir / "pg.spool")]
        results["exact"] = serve(store_args, [], args.events, step_us, args.repeats)
        started = time.perf_counter()
        writer = PostgresWriter(url, node="bench", unique_properties=("user_id",))
        writer._sketches.backfill_declared(writer._writing())  # what its first insert would do
        writer.close()
        results["backfill_s"] = time.perf_counter() - started
        declared = ["--unique-property", "data.user_id"]
        results["sketched"] = serve(store_args, declared, args.events, step_us, args.repeats)
    finally:
        cluster.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"uniques-postgresql-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
