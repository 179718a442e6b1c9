"""The writer's CPU per stored event: a spool of N requests x E events drained by the real
writer code (`tlytics.writer.drain_batch`, the server's batch sizes) into a fresh SQLite store.

    python -m bench.writer_cpu                          # this checkout, 2,000 requests x 100 events
    python -m bench.writer_cpu --old /tmp/old-checkout  # A/B against another checkout, same run
    python -m bench.writer_cpu --events-per-request 1 --requests 20000
    python -m bench.writer_cpu --profile                # cProfile's top entries of the drain
    python -m bench.writer_cpu --old /tmp/old --property path   # with data.path declared (100 values)

Each drain runs in its own process (PYTHONPATH = the checkout under test) on its own copy of one
spool built once, so every side reads the same bytes; CPU is `time.process_time()` around the
drain loop only (not imports, not opening). Rounds alternate old/new so a busy machine slows
both alike; the ratio is taken from each round's pair.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH_MAX_ENTRIES = 1_000  # tlytics.ingest.settings: writer_batch_max_entries
BATCH_MAX_EVENTS = 20_000  # ... writer_batch_max_events


def build_spool(directory: Path, requests: int, events_per_request: int) -> int:
    """A spool of `requests` entries as the server writes them (events like bench/post.lua's)."""
    from tlytics.ids import uuid7_block
    from tlytics.spool import Spool
    from tlytics.spool.entry import encode_spool_entry

    spool = Spool(directory)
    now_us = time.time_ns() // 1000
    batch = []
    for request in range(requests):
        first = uuid7_block(events_per_request)
        rows = []
        for i in range(events_per_request):
            n = request * events_per_request + i
            data = f'{{"user_id":"u{n % 5000}","path":"/products/{i}","referrer":"https://example.com/","n":{n}}}'
            rows.append(((first + i).to_bytes(16, "big").hex(), "page_view", now_us + n, data.encode()))
        from msgspec import Raw

        batch.append(encode_spool_entry(now_us, [(id_hex, key, ts, Raw(data)) for id_hex, key, ts, data in rows]))
        if len(batch) >= 500:
            spool.append_many(batch)
            batch = []
    if batch:
        spool.append_many(batch)
    spool.close()
    return requests * events_per_request


def drain(spool_dir: Path, store_path: Path, profile: bool, properties: list[str]) -> dict[str, Any]:
    """Child: drain the spool into a fresh store with the code on PYTHONPATH; CPU of the drain."""
    from tlytics.spool import Spool
    from tlytics.store.sqlite import SQLiteWriter
    from tlytics.writer import drain_batch
    from tlytics.writer.resources import WriterResources

    resources = WriterResources(
        Spool(spool_dir),
        Spool(spool_dir.with_name("quarantine")),
        lambda: SQLiteWriter(store_path, declared_properties=properties),
    )
    resources.store  # noqa: B018 - opened (and migrated) outside the measurement
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, events, inserted = time.process_time(), 0, 0
    while True:
        result = drain_batch(resources, BATCH_MAX_ENTRIES, BATCH_MAX_EVENTS)
        if not result.entries and not result.quarantined:
            break
        events += result.events
        inserted += result.inserted
    cpu_s = time.process_time() - started
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
        sys.stderr.write(out.getvalue())
    resources.close_store()
    return {"events": events, "inserted": inserted, "cpu_s": cpu_s}


def run_side(code_root: Path, spool_master: Path, work: Path, profile: bool, properties: list[str]) -> dict[str, Any]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(spool_master, work / "spool")
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(work)] + (["--profile"] if profile else [])
    command += [flag for path in properties for flag in ("--property", path)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=1800)
    if profile:
        sys.stderr.write(f"--- profile of {code_root}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--events-per-request", type=int, default=100)
    parser.add_argument("--old", type=Path, help="another checkout to compare with, in the same run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries of each drain")
    parser.add_argument("--property", action="append", default=[], help="declare data.<this> in the store")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(drain(args.child / "spool", args.child / "store.db", args.profile, args.property)))
        return
    sides = {"new": ROOT} | ({"old": args.old.resolve()} if args.old else {})
    with tempfile.TemporaryDirectory(prefix="tlytics-writer-cpu-") as scratch:
        master = Path(scratch) / "master" / "spool"
        master.parent.mkdir()
        sys.path.insert(0, str(ROOT))
        total = build_spool(master, args.requests, args.events_per_request)
        per_event: dict[str, list[float]] = {name: [] for name in sides}
        for _round in range(args.rounds):
            for name, root in sorted(sides.items()):
                result = run_side(root, master, Path(scratch) / name, args.profile and _round == 0, args.property)
                if result["inserted"] != total:
                    raise SystemExit(f"{name}: stored {result['inserted']} of {total} events")
                per_event[name].append(result["cpu_s"] / total * 1e6)
    print(f"{args.requests} requests x {args.events_per_request} events, {args.rounds} rounds")
    for name, values in per_event.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"{name}: writer CPU per stored event: least {min(values):.2f} µs, median {statistics.median(values):.2f} ({rounds})"
        )
    if "old" in per_event:
        # The least of each side is the steadiest figure on a shared machine (others' load only adds).
        ratios = [new / old for new, old in zip(per_event["new"], per_event["old"], strict=True)]
        print(
            f"new / old: least {min(per_event['new']) / min(per_event['old']):.2f},"
            f" median of the rounds' ratios {statistics.median(ratios):.2f} ("
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")"
        )


if __name__ == "__main__":
    main()
