"""Pre-aggregates of declared properties (issue 21, item 3), A/B against another checkout in
the same run: one store filled and declared by the old checkout, copied, the copy opened by
this one (its migration counts the stored values); both served at once, each question asked
of each server in turn; then the writer's cost of a declared property with and without its
counts (the same fill through each checkout's store class).

    python -m bench.preaggregates --old /tmp/old-checkout --events 1000000 --days 60

bench.view's events: 20 keys, 50 paths, amounts 0-999 (too many values to be counted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.ingest import ROOT, free_port, server_command, wait_healthy
from bench.view import BASE_US

PROPERTIES = ["path", "amount"]


def in_checkout(checkout: Path, code: str) -> str:
    """Run Python `code` with `checkout`'s tlytics and bench; its last line of output."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=checkout, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1]


def fill_seconds(checkout: Path, db: Path, events: int, step_us: int, declared: list[str]) -> float:
    code = (
        "from pathlib import Path; from bench.view import fill;"
        f" print(fill(Path({str(db)!r}), {events}, step_us={step_us}, declared_properties={declared!r}))"
    )
    return float(in_checkout(checkout, code))


def declare_seconds(checkout: Path, db: Path) -> float:
    code = (
        "import time; from tlytics.store import SQLiteStore; t = time.perf_counter();"
        f" s = SQLiteStore({str(db)!r}, declared_properties={PROPERTIES!r}); assert s.wait_backfilled(3600);"
        " s.close(); print(time.perf_counter() - t)"
    )
    return float(in_checkout(checkout, code))


def iso(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + "Z"


def questions(events: int, step_us: int) -> dict[str, str]:
    """The last 30 days of the fill, daily: breakdowns and charts filtered on the path."""
    end = BASE_US + events * step_us
    month = f"interval=day&since={iso(end - 30 * 86_400_000_000)}&until={iso(end)}"
    return {
        "breakdown_path": f"/stats?{month}&breakdown=data.path",
        "breakdown_path_key": f"/stats?{month}&breakdown=data.path&key=key_3",
        "where_path_equal": f"/stats?{month}&where=data.path:/products/4",
        "where_path_equal_key": f"/stats?{month}&where=data.path:/products/4&key=key_4",
        "where_path_not_equal": f"/stats?{month}&where=data.path!=/products/4",
        "where_path_contains": f"/stats?{month}&where=data.path~ducts/4",
        "where_path_equal_kolkata": f"/stats?{month}&tz=Asia/Kolkata&where=data.path:/products/4",
        "where_amount_greater (not counted)": f"/stats?{month}&where=data.amount%3E990",
    }


def timed(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, body


def serve(checkout: Path, db: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    flags = [flag for path in PROPERTIES for flag in ("--property", f"data.{path}")]
    process = subprocess.Popen(
        server_command(port, "--db", str(db), *flags, "--log-level", "warning"),
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process, timeout_s=300)
    return process, url


def read_figures(old: Path, old_db: Path, new_db: Path, events: int, step_us: int, repeats: int) -> dict[str, object]:
    servers = [serve(old, old_db), serve(ROOT, new_db)]
    try:
        figures: dict[str, object] = {}
        for name, path in questions(events, step_us).items():
            samples: list[list[float]] = [[], []]
            answers = set()
            for _ in range(repeats):
                for side, (_, url) in enumerate(servers):
                    ms, body = timed(url + path)
                    samples[side].append(ms)
                    answers.add(body)
            old_p50, new_p50 = (statistics.median(side) for side in samples)
            figures[name] = {
                "old_p50_ms": round(old_p50, 1),
                "new_p50_ms": round(new_p50, 1),
                "new_to_old": round(new_p50 / old_p50, 3),
                "same_answers": len(answers) == 1,
            }
        return figures
    finally:
        for process, _ in servers:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="a checkout without the pre-aggregates")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ingest-events", type=int, default=200_000)
    parser.add_argument("--ingest-rounds", type=int, default=2)
    args = parser.parse_args()
    step_us = max(1, int(args.days * 86_400_000_000) // args.events)
    work = Path(tempfile.mkdtemp(prefix="tlytics-preagg-bench-"))
    try:
        old_db, new_db = work / "old.db", work / "new.db"
        fill_seconds(args.old, old_db, args.events, step_us, [])
        declared_s = declare_seconds(args.old, old_db)
        shutil.copy(old_db, new_db)
        migrate_s = declare_seconds(ROOT, new_db)  # the migration: counts from the stored values
        results: dict[str, object] = {
            "events": args.events,
            "days": args.days,
            "old_backfill_s": round(declared_s, 1),
            "new_migration_s": round(migrate_s, 1),
            "reads": read_figures(args.old, old_db, new_db, args.events, step_us, args.repeats),
        }
        # The writer: `path` declared, with (this checkout) and without (old) its counts.
        rates: dict[str, list[float]] = {"plain": [], "old_path": [], "new_path": []}
        for round_ in range(args.ingest_rounds):
            for name, checkout, declared in (
                ("plain", ROOT, []),
                ("old_path", args.old, ["path"]),
                ("new_path", ROOT, ["path"]),
            ):
                db = work / f"ingest-{name}-{round_}.db"
                rates[name].append(
                    args.ingest_events / fill_seconds(checkout, db, args.ingest_events, step_us, declared)
                )
                db.unlink()
        results["ingest"] = {
            "events": args.ingest_events,
            "rates_per_s": {name: [round(rate) for rate in values] for name, values in rates.items()},
            "new_path_to_old_path": [
                round(n / o, 3) for n, o in zip(rates["new_path"], rates["old_path"], strict=True)
            ],
            "new_path_to_plain": [round(n / p, 3) for n, p in zip(rates["new_path"], rates["plain"], strict=True)],
            "old_path_to_plain": [round(o / p, 3) for o, p in zip(rates["old_path"], rates["plain"], strict=True)],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
