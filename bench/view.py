"""`GET /view` on a big store: fills a store with N events straight through the Store
interface (not HTTP, to save time), starts the real server on it, and times the first page,
a deep page, and the total; then the richer questions of issue 14 (unique_total, compare=previous, a `>`
and a `~` filter, a three-step funnel), and the dashboard questions of issue 21 over the last
30 days, with the store's bytes on disk per event against the raw field bytes.

With `--property` (repeatable, SQLite), the dashboard questions are asked twice on the same
data: undeclared, then after declaring the properties (the backfill timed through the store
class), with each declared figure's ratio to the undeclared one and each property's cost.

    python -m bench.view                  # 10M events over 60 days (about 2 GB on disk)
    python -m bench.view --events 1000000 --days 60 --property data.amount --property data.path
    python -m bench.view --store both     # SQLite, then PostgreSQL (a cluster of its own), same
                                          # data, with each figure's ratio PostgreSQL / SQLite

Big stores (issue 21): `--store-file PATH` fills once and reuses, `--only` runs one part
(undeclared, declared, server-backfill) so parts can run side by side, `--declared-store-file`
uses a store filled with the properties declared instead of a backfill, `--server-backfill`
and `--unique-choice` add figures (see bench/declared_scale.py and bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path

from bench.declared_scale import (
    backfill_in_queried_server,
    copy_of,
    progress,
    reused_store,
    side_by_side,
    started_server,
    unique_choice,
)
from bench.ingest import RESULTS, ROOT
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
    raw_bytes: list[int] | None = None,
    declared_properties: list[str] | None = None,
) -> float:
    """Fill a store with `events` events `step_us` apart from BASE_US; the seconds it took.
    The raw bytes of their fields (id, timestamp, received_at, key, data) are added to
    `raw_bytes[0]` when given."""
    store: StoreWriter
    if store_url is not None:
        from tlytics.store.postgres import PostgresWriter

        store = PostgresWriter(store_url, node="bench", unique_properties=unique_properties)
    else:
        assert db_path is not None
        store = SQLiteStore(db_path, unique_properties=unique_properties, declared_properties=declared_properties)
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
        if raw_bytes is not None:
            raw_bytes[0] += sum(16 + 8 + 8 + len(key.encode()) + len(data.encode()) for _, key, _, _, data in rows)
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


STEP_US = 1000  # between two filled events; main() sets it from --events and --days


def _iso(n: int) -> str:
    """The timestamp of the n-th filled event (one every STEP_US from BASE_US)."""
    from tlytics.timefmt import format_rfc3339_us

    return format_rfc3339_us(BASE_US + max(n, 0) * STEP_US)


def middle_cursor(url: str, events: int) -> str:
    """A cursor half way down the store, found with an `until` seek."""
    with urllib.request.urlopen(f"{url}/view?until={_iso(events // 2)}&page_size=10", timeout=60) as response:
        return str(json.loads(response.read())["next_cursor"])


def last_days(events: int, days: int) -> str:
    """since and until of the last `days` days of the filled events (the whole fill if shorter)."""
    return f"since={_iso(events - days * 86_400_000_000 // STEP_US)}&until={_iso(events)}"


def dashboard_questions(events: int) -> dict[str, str]:
    """Issue 21's questions, each over the last 30 days: what a dashboard asks every few
    seconds (name -> path and query)."""
    month = last_days(events, 30)
    daily = f"/stats?interval=day&{month}"
    return {
        "d_stats_where_greater_30d": f"{daily}&where=data.amount%3E990",
        "d_stats_breakdown_path_30d": f"{daily}&breakdown=data.path",
        "d_view_where_greater_first_page": "/view?where=data.amount%3E990",
        "d_stats_where_contains_30d": f"{daily}&where=data.path~ducts/4",
        "d_stats_unique_user_30d": f"{daily}&unique=data.user_id",
        "d_funnel_3_steps_7d_30d": f"/funnel?steps=key_0,key_1,key_2&by=data.user_id&within=7d&{month}",
    }


def dashboard_figures(url: str, events: int, repeats: int) -> dict[str, dict[str, float]]:
    return {name: time_get(url + question, repeats) for name, question in dashboard_questions(events).items()}


def store_bytes(db_path: Path) -> int:
    """The store's bytes on disk: the file and its WAL."""
    files = (db_path, db_path.with_name(db_path.name + "-wal"))
    return sum(path.stat().st_size for path in files if path.exists())


def time_get(url: str, repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=900) as response:
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


def measure(
    server_args: list[str], args: argparse.Namespace, fill_s: float, *, dashboard_only: bool = False
) -> dict[str, object]:
    """Start the real server on a filled store and time its reads over HTTP."""
    process, url = started_server(server_args)
    try:
        dashboard = dashboard_figures(url, args.events, args.dashboard_repeats)
        if dashboard_only or args.dashboard_only:
            return {"events": args.events, "days": args.days, "fill_rows_per_s": args.events / fill_s, **dashboard}
        return {
            "events": args.events,
            "days": args.days,
            "fill_rows_per_s": args.events / fill_s,
            "view_first_page": time_get(f"{url}/view", args.repeats),
            "view_first_page_1000": time_get(f"{url}/view?page_size=1000", max(20, args.repeats // 10)),
            "view_page_100": time_get(f"{url}/view?page=100", args.repeats),
            "view_deep_page_middle": time_get(f"{url}/view?page={args.events // 20}", 5),
            "view_cursor_middle": time_get(f"{url}/view?cursor={middle_cursor(url, args.events)}", args.repeats),
            "stats_daily_30_days": time_get(f"{url}/stats?interval=day&{last_days(args.events, 30)}", 5),
            "keys": time_get(f"{url}/keys", 3),
            **question_figures(url, args.events),
            **dashboard,
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def declared_store(args: argparse.Namespace) -> tuple[Path, float]:
    """`--declared-store-file`: the same events with `--property` declared from the first
    insert, filled when missing (reused after); its path and the fill's seconds."""
    from tlytics.setting_values import declared_property

    assert args.declared_store_file is not None
    paths = [declared_property(text) for text in args.property]
    db_path = args.declared_store_file.resolve()
    fill_s, _ = reused_store(db_path, args.events, STEP_US, partial(fill, declared_properties=paths), [0])
    return db_path, fill_s


def declared_run(db_path: Path, args: argparse.Namespace, undeclared: dict[str, object]) -> dict[str, object]:
    """Declare `args.property` on the filled store (on a copy of it with `--store-file`; the
    backfill timed through the store class), then ask the dashboard questions again: the
    figures, their ratio to the undeclared ones, and what each property costs on disk."""
    from tlytics.setting_values import declared_property

    paths = [declared_property(text) for text in args.property]
    plain = db_path
    figures: dict[str, object] = {"properties": args.property}
    before = store_bytes(db_path)
    if args.declared_store_file is not None:
        # Filled with the properties declared from the first insert (no backfill to time).
        db_path, fill_s = declared_store(args)
        figures["declared_fill_rows_per_s"] = round(args.events / fill_s)
    else:
        if args.store_file is not None:
            db_path = copy_of(plain, "declared")
        started = time.perf_counter()
        store = SQLiteStore(db_path, declared_properties=paths)
        if not store.wait_backfilled(3600 * 4):
            raise SystemExit("the backfill did not finish within four hours")
        backfill_s = time.perf_counter() - started
        store.close()
        figures["backfill_s"] = round(backfill_s, 2)
        figures["backfill_events_per_s"] = round(args.events / backfill_s)
    added = store_bytes(db_path) - before
    figures["bytes_per_event_declared"] = round(store_bytes(db_path) / args.events, 1)
    figures["bytes_per_event_per_property"] = round(added / args.events / len(paths), 1)
    if not args.skip_ingest_cost:
        # The writer's cost: the same fill into new stores, without and with the properties.
        ingest_events = min(args.events, 200_000)
        plain_s = fill(db_path.with_name("ingest-plain.db"), ingest_events, step_us=STEP_US)
        declared_s = fill(
            db_path.with_name("ingest-declared.db"), ingest_events, step_us=STEP_US, declared_properties=paths
        )
        figures["ingest_events"] = ingest_events
        figures["ingest_rate_declared_to_plain"] = round(plain_s / declared_s, 3)
    progress(figures)
    flags = [flag for text in args.property for flag in ("--property", text)]
    answers = measure(["--db", str(db_path), *flags], args, 1.0, dashboard_only=True)
    figures.update(answers)
    figures["declared_to_undeclared_p50"] = {
        name: round(figure["p50_ms"] / undeclared[name]["p50_ms"], 3)  # type: ignore[index]
        for name, figure in answers.items()
        if isinstance(figure, dict) and name in undeclared
    }
    progress(figures)
    if args.store_file is not None and args.server_backfill:
        figures.update(server_backfill(plain, args))
    progress(figures)
    if args.store_file is not None and args.unique_choice:
        figures.update(
            unique_choice(
                db_path,
                {
                    "1d": last_days(args.events, 1),
                    "7d": last_days(args.events, 7),
                    "30d": last_days(args.events, 30),
                    "60d": last_days(args.events, 60),
                },
            )
        )
    return figures


def server_backfill(plain: Path, args: argparse.Namespace) -> dict[str, object]:
    """The declared backfill inside a server answering the dashboard's questions meanwhile,
    on a copy of the plain store."""
    month = last_days(args.events, 30)
    questions = [
        f"/stats?interval=day&{month}&where=data.amount%3E990",
        f"/stats?interval=day&{month}&breakdown=data.path",
        "/view?where=data.amount%3E990",
    ]
    return backfill_in_queried_server(copy_of(plain, "server"), args.property, questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=float, default=60.0, help="spread the events over this many days")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--dashboard-repeats", type=int, default=5, help="samples of each dashboard question")
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument(
        "--property", action="append", default=[], help="declare data.<property> and ask again (SQLite)"
    )
    parser.add_argument(
        "--store-file", type=Path, help="fill the SQLite store here once and reuse it (copies for the declared runs)"
    )
    parser.add_argument(
        "--declared-store-file",
        type=Path,
        help="a store of the same events with the --property properties declared from the first insert (filled"
        " when missing, reused after), instead of a backfill",
    )
    parser.add_argument("--dashboard-only", action="store_true", help="ask the dashboard questions only")
    parser.add_argument("--skip-ingest-cost", action="store_true", help="skip the 200,000-event ingest comparison")
    parser.add_argument(
        "--server-backfill", action="store_true", help="time the backfill inside a queried server (--store-file)"
    )
    parser.add_argument(
        "--unique-choice", action="store_true", help="sketched vs exact distinct counts over 1-60 days (--store-file)"
    )
    parser.add_argument(
        "--only",
        choices=["all", "undeclared", "declared", "server-backfill", "compare"],
        default="all",
        help="with --store-file, one part of the SQLite run (run the parts side by side on a busy machine)",
    )
    args = parser.parse_args()
    global STEP_US
    STEP_US = max(1, int(args.days * 86_400_000_000) // args.events)
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-view-bench-"))
    results: dict[str, object] = {}
    try:
        if args.store in ("sqlite", "both"):
            raw = [0]
            if args.store_file is not None:
                db_path = args.store_file.resolve()
                fill_s, reused = reused_store(db_path, args.events, STEP_US, fill, raw)
                results["store_reused"] = reused
            else:
                db_path = workdir / "view.db"
                fill_s = fill(db_path, args.events, step_us=STEP_US, raw_bytes=raw)
            on_disk = store_bytes(db_path)
            sqlite: dict[str, object] = {
                "bytes_per_event": round(on_disk / args.events, 1),
                "raw_field_bytes_per_event": round(raw[0] / args.events, 1),
                "on_disk_to_raw": round(on_disk / raw[0], 2),
            }
            if args.only in ("all", "undeclared"):
                sqlite.update(measure(["--db", str(db_path)], args, fill_s))
            results["sqlite"] = sqlite
            progress(sqlite)
            if args.only == "compare":
                assert args.declared_store_file is not None, "--only compare needs --declared-store-file"
                results["sqlite_compare"] = side_by_side(
                    db_path,
                    declared_store(args)[0],
                    args.property,
                    dashboard_questions(args.events),
                    args.dashboard_repeats,
                )
            elif args.only == "server-backfill":
                results["sqlite_server_backfill"] = server_backfill(db_path, args)
            elif args.property and args.only in ("all", "declared"):
                results["sqlite_declared"] = declared_run(db_path, args, sqlite)
        if args.store in ("postgresql", "both"):
            sys.path.insert(0, str(ROOT))
            from tests.postgres_cluster import PostgresCluster

            cluster = PostgresCluster(fsync=True)
            try:
                cluster.start()
                store_url = cluster.create_database("view")
                fill_s = fill(None, args.events, store_url=store_url, step_us=STEP_US)
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
        on_sqlite, on_postgres = results["sqlite"], results["postgresql"]
        assert isinstance(on_sqlite, dict) and isinstance(on_postgres, dict)
        results["postgresql_to_sqlite_p50"] = {
            name: round(on_postgres[name]["p50_ms"] / on_sqlite[name]["p50_ms"], 2)
            for name, figure in on_sqlite.items()
            if isinstance(figure, dict)
        }
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"view-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
