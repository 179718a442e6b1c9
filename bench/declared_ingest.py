"""What declared properties cost the writer (issue 21): the same events inserted through
`SQLiteStore.insert` into fresh stores with no declared property, one, and three, in the same
run, so the ingest rate with properties reads as a ratio to the rate without.

    python -m bench.declared_ingest                           # this checkout, 200,000 events
    python -m bench.declared_ingest --old /tmp/old-checkout   # A/B against another checkout, same run
    python -m bench.declared_ingest --events 400000 --batch 50000 --rounds 3
    python -m bench.declared_ingest --prefill 1000000 --cases plain,3   # into a store of 1M events

The events are `bench.view`'s (100,000 users, 1,000 amounts, 50 paths, spread 1 ms apart), the
declared properties those of `bench.view`: `data.amount` (1,000 values: not counted),
`data.path` (50 values: counted, tlytics.store.sqlite.preaggregates) and `data.user_id`
(100,000 values). Each fill runs in its own process (PYTHONPATH = the checkout under test); its
rows are built before the clock starts (`--prefill` events are inserted first, untimed: the
cost of a value index grows with its size), and the figures are the insert calls' wall time and
CPU time (`time.process_time()`: user + system) alone. On a shared machine the CPU time is the
steadier figure (other processes only add wall time); the rate is events per second of either.
Rounds alternate sides and cases, so a busy machine slows each alike; each ratio is taken within
one round, and the least of each figure is quoted with every round's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE_US = 1_700_000_000_000_000
CASES = {
    "plain": [],
    "1 (amount)": ["amount"],
    "3 (amount, path, user_id)": ["amount", "path", "user_id"],
}
EXTRA_CASES = {"1 (path)": ["path"], "1 (user_id)": ["user_id"]}


def event_data(n: int) -> str:
    """bench.view's event n (kept here so both checkouts insert the very same bytes)."""
    return (
        f'{{"user_id":"u{n // 3 % 100_000}","amount":{n % 1000},"path":"/products/{n % 50}",'
        '"referrer":"https://example.com/"}'
    )


def fill(store_path: Path, events: int, batch: int, properties: list[str], prefill: int) -> dict[str, float]:
    """Child: insert `prefill` then `events` events, `batch` a transaction, into a fresh store at
    `store_path` with `properties` declared, by the code on PYTHONPATH; the wall and CPU seconds
    of the inserts after the prefill."""
    from tlytics.store.sqlite import SQLiteStore

    store = SQLiteStore(store_path, declared_properties=properties)
    for start in range(0, prefill, batch):
        store.insert(batch_rows(start, min(start + batch, prefill)))
    batches = [
        batch_rows(start, min(start + batch, prefill + events)) for start in range(prefill, prefill + events, batch)
    ]
    wall_s = cpu_s = 0.0
    inserted = 0
    for rows in batches:
        wall, cpu = time.perf_counter(), time.process_time()
        inserted += store.insert(rows)
        wall_s += time.perf_counter() - wall
        cpu_s += time.process_time() - cpu
    store.close()
    if inserted != events:
        raise SystemExit(f"stored {inserted} of {events} events")
    return {"wall_s": wall_s, "cpu_s": cpu_s}


def batch_rows(first: int, end: int) -> list[tuple[bytes, str, int, int, str]]:
    """Events first..end-1 as store rows."""
    return [
        ((1 << 120 | n).to_bytes(16, "big"), f"key_{n % 20}", BASE_US + n * 1000, BASE_US + n * 1000, event_data(n))
        for n in range(first, end)
    ]


def run_fill(
    code_root: Path, scratch: Path, events: int, batch: int, properties: list[str], prefill: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=scratch) as directory:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(Path(directory) / "store.db")]
        command += ["--events", str(events), "--batch", str(batch), "--prefill", str(prefill)]
        command += [flag for path in properties for flag in ("--property", path)]
        env = {**os.environ, "PYTHONPATH": str(code_root)}
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=3600)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000, help="events per insert (the writer's most: 20,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", type=Path, help="another checkout to compare with, in the same run")
    parser.add_argument("--prefill", type=int, default=0, help="events inserted first, untimed")
    parser.add_argument("--each", action="store_true", help="also each property alone")
    parser.add_argument("--cases", help="comma-separated: plain,1,3 (default all)")
    parser.add_argument("--property", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(fill(args.child, args.events, args.batch, args.property, args.prefill)))
        return
    sides = {"new": ROOT} | ({"old": args.old.resolve()} if args.old else {})
    cases = CASES | (EXTRA_CASES if args.each else {})
    if args.cases:
        wanted = args.cases.split(",")
        cases = {name: paths for name, paths in cases.items() if name.split(" ")[0] in wanted}
    figures: dict[tuple[str, str], list[dict[str, float]]] = {(s, c): [] for s in sides for c in cases}
    with tempfile.TemporaryDirectory(prefix="tlytics-declared-ingest-") as scratch:
        for _round in range(args.rounds):
            for case, properties in cases.items():
                for side, root in sorted(sides.items()):
                    figures[side, case].append(
                        run_fill(root, Path(scratch), args.events, args.batch, properties, args.prefill)
                    )
    print(
        f"{args.events} events after {args.prefill}, {args.batch} per insert, {args.rounds} rounds"
        " (ratios within each round)"
    )
    for side in sides:
        plain = figures[side, "plain"]
        for case in cases:
            rounds = figures[side, case]
            for unit in ("cpu_s", "wall_s"):
                per_event = [r[unit] / args.events * 1e6 for r in rounds]
                to_plain = [p[unit] / r[unit] for p, r in zip(plain, rounds, strict=True)]
                print(
                    f"{side} {case:<26} {unit[:-2]:<4} {min(per_event):6.2f} µs/event;"
                    f" rate ÷ plain: median {statistics.median(to_plain):.2f} ("
                    + ", ".join(f"{r:.2f}" for r in to_plain)
                    + ")"
                )
    if "old" in sides:
        for case in cases:
            for unit in ("cpu_s", "wall_s"):
                ratios = [n[unit] / o[unit] for n, o in zip(figures["new", case], figures["old", case], strict=True)]
                print(
                    f"new ÷ old time, {case:<26} {unit[:-2]:<4}: median {statistics.median(ratios):.2f} ("
                    + ", ".join(f"{r:.2f}" for r in ratios)
                    + ")"
                )
    out: dict[str, Any] = {f"{s} {c}": v for (s, c), v in figures.items()}
    print(json.dumps(out), file=sys.stderr)


if __name__ == "__main__":
    main()
