"""The declared backfill's speed (issue 21, backfill21): property values stored per second
when properties are declared on a store that already holds events, through the store class.

A plain store of `--events` of `bench.view`'s events (spread over `--days`) is filled once at
`--store-file` and reused; each case declares its properties on a fresh copy and times the
backfill (`SQLiteStore(..., declared_properties=...)` to `wait_backfilled`). Run it from two
checkouts on the same store file to compare them in one run (`--label` names the output):

    nice -n 10 python -m bench.backfill_speed --events 500000 --store-file /tmp/bf/plain-500k.db
    cd /tmp/old && PYTHONPATH=. nice -n 10 python -m bench.backfill_speed --events 500000 \
        --store-file /tmp/bf/plain-500k.db --label main
    # a store too big to wait for: the values stored in the first 120 s
    nice -n 10 python -m bench.backfill_speed --events 10000000 --store-file /tmp/scale21/plain-10m.db \
        --case amount --window-s 120
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import cast

import apsw

from bench.declared_scale import copy_of, reused_store
from bench.view import fill
from tlytics.store import SQLiteStore

CASES = {
    "amount": ["amount"],
    "path": ["path"],
    "user_id": ["user_id"],
    "three": ["amount", "path", "user_id"],
}


def backfill_seconds(plain: Path, label: str, paths: list[str]) -> float:
    """Declare `paths` on a copy of `plain` and wait for their backfill: its seconds."""
    copy = copy_of(plain, f"{label}-{'-'.join(paths)}")
    try:
        started = time.perf_counter()
        store = SQLiteStore(copy, declared_properties=paths)
        if not store.wait_backfilled(4 * 3600):
            raise SystemExit("the backfill did not finish within four hours")
        seconds = time.perf_counter() - started
        store.close()
        return seconds
    finally:
        for name in (copy, copy.with_name(copy.name + "-wal"), copy.with_name(copy.name + "-shm")):
            name.unlink(missing_ok=True)


def values_in_window(plain: Path, label: str, paths: list[str], window_s: float) -> int:
    """Declare `paths` on a copy of `plain`, let the backfill run for `window_s` seconds (from
    the store's opening), stop it: the values it stored (for stores too big to wait for)."""
    copy = copy_of(plain, f"{label}-{'-'.join(paths)}")
    try:
        store = SQLiteStore(copy, declared_properties=paths)
        store.wait_backfilled(window_s)
        store.close()  # stops after the chunk it is on: its values count too
        connection = apsw.Connection(str(copy))
        stored = connection.execute("SELECT count(*) FROM property_values").get
        connection.close()
        return cast(int, stored)
    finally:
        for name in (copy, copy.with_name(copy.name + "-wal"), copy.with_name(copy.name + "-shm")):
            name.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--store-file", type=Path, required=True)
    parser.add_argument("--label", default="new")
    parser.add_argument("--window-s", type=float, help="values stored in this many seconds, not the whole backfill")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: every case")
    args = parser.parse_args()
    step_us = int(args.days * 86_400_000_000 // args.events)
    args.store_file.parent.mkdir(parents=True, exist_ok=True)
    reused_store(args.store_file, args.events, step_us, partial(fill, step_us=step_us), [0])
    figures: dict[str, object] = {"label": args.label, "events": args.events}
    for case in args.case or list(CASES):
        paths = CASES[case]
        if args.window_s is not None:
            started = time.perf_counter()
            stored = values_in_window(args.store_file, args.label, paths, args.window_s)
            seconds = time.perf_counter() - started
            figures[case] = {"s": round(seconds, 2), "values": stored, "values_per_s": round(stored / seconds)}
            print(json.dumps({case: figures[case]}), file=sys.stderr, flush=True)
            continue
        cpu_started = time.process_time()
        seconds = backfill_seconds(args.store_file, args.label, paths)
        cpu_s = time.process_time() - cpu_started
        values = args.events * len(paths)
        figures[case] = {
            "s": round(seconds, 2),
            "values_per_s": round(values / seconds),
            "cpu_s": round(cpu_s, 2),
            "values_per_cpu_s": round(values / cpu_s),
        }
        print(json.dumps({case: figures[case]}), file=sys.stderr, flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
