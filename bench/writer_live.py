"""The writer's CPU per spool entry while the spool is being appended to, as in the server.

    python -m bench.writer_live                           # this checkout: 1-event entries, 2,000/s for 10 s
    python -m bench.writer_live --old /tmp/old-checkout   # A/B against another checkout, same run
    python -m bench.writer_live --events-per-request 100 --rate 200

Requests are counted, not spool rows: with group entries (a checkout that has them) one group
commit of `--group` requests is one spool entry, before them it was `--group` entries.

`bench.writer_cpu` drains a spool built beforehand (its WAL already folded into the file), so
what the writer's checkpoints cost in the server is not in it: there the spool's WAL holds the
server's appends, which only the writer checkpoints. Here an appender process appends entries
as the server does (group commits of a few entries at a steady rate, `checkpoint_on_append=False`,
a disk reserve) while a writer process drains them as the server's writer does (`drain_batch`
until the spool is empty, then a flush period), each side's code on PYTHONPATH. CPU is each
process's own (`time.process_time()`), per entry appended and drained; rounds alternate
old/new and the ratio is taken from each round's pair.
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
MIN_FREE_BYTES = 64 * 1024 * 1024  # the server's default --spool-min-free is larger; a reserve as the server has one


def entries(count: int, events_per_request: int) -> list[bytes]:
    """Spool entries as the server writes them (events like bench/post.lua's)."""
    from msgspec import Raw

    from tlytics.ids import uuid7_block
    from tlytics.spool.entry import encode_spool_entry

    now_us = time.time_ns() // 1000
    made = []
    for request in range(count):
        first = uuid7_block(events_per_request)
        rows = []
        for i in range(events_per_request):
            n = request * events_per_request + i
            data = f'{{"user_id":"u{n % 5000}","path":"/products/{i}","referrer":"https://example.com/","n":{n}}}'
            rows.append(((first + i).to_bytes(16, "big").hex(), "page_view", now_us + n, Raw(data)))
        made.append(encode_spool_entry(now_us, rows))
    return made


def as_group_commit(values: list[bytes]) -> list[bytes]:
    """What the checkout's group commit writes for these requests' entries: one spool entry
    for the group where it has group entries (`group_spool_entries`), else one per request."""
    try:
        from tlytics.spool.entry import group_spool_entries
    except ImportError:  # a checkout from before group entries
        return values
    return group_spool_entries(values)


def append(spool_dir: Path, count: int, events_per_request: int, rate: float, group: int) -> dict[str, Any]:
    """Child: append `count` entries in groups of `group` at `rate` entries/s, as the server does."""
    from tlytics.spool import Spool

    values = entries(count, events_per_request)
    spool = Spool(spool_dir, checkpoint_on_append=False, min_free_bytes=MIN_FREE_BYTES)
    started_cpu, started = time.process_time(), time.monotonic()
    for start in range(0, count, group):
        due = started + start / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        spool.append_many(as_group_commit(values[start : start + group]))
    cpu_s = time.process_time() - started_cpu
    spool.close()
    return {"cpu_s": cpu_s, "wall_s": time.monotonic() - started}


def drain(spool_dir: Path, store_path: Path, appender: list[str], flush_period_s: float) -> dict[str, Any]:
    """Child: start the appender and run the checkout's own WriteScheduler (its executor on a
    thread) until the appender is done and the spool drained; the writer's CPU and the appender's."""
    import asyncio

    from tlytics.spool import Spool
    from tlytics.store.sqlite import SQLiteWriter
    from tlytics.writer import WriterResources
    from tlytics.writer.executor import ThreadExecutor
    from tlytics.writer.scheduler import WriteScheduler

    Spool(spool_dir).close()  # created before either side opens it
    resources = WriterResources(
        Spool(spool_dir), Spool(spool_dir.with_name("quarantine")), lambda: SQLiteWriter(store_path)
    )
    resources.store  # noqa: B018 - opened (and migrated) outside the measurement
    split = _time_spent_in(Spool, ("remove", "checkpoint"))
    batches: list[int] = []

    async def run() -> float:
        scheduler = WriteScheduler(
            ThreadExecutor(resources),
            flush_period_s=flush_period_s,
            batch_max_entries=BATCH_MAX_ENTRIES,
            batch_max_events=BATCH_MAX_EVENTS,
            on_batch=lambda result: batches.append(result.entries if result else -1),
        )
        started = time.process_time()
        child = await asyncio.create_subprocess_exec(*appender, stdout=asyncio.subprocess.PIPE)
        scheduler.start()
        out, _ = await asyncio.wait_for(child.communicate(), timeout=600)
        await scheduler.close(drain_timeout_s=60)
        cpu_s = time.process_time() - started
        appended.update(json.loads(out))
        return cpu_s

    appended: dict[str, Any] = {}
    cpu_s = asyncio.run(run())
    inserted = int(resources.store._write_connection.execute("SELECT count(*) FROM events").get)  # type: ignore[attr-defined]
    resources.close_store()
    return {
        "left": resources.spool.count(),
        "inserted": inserted,
        "batches": len(batches),  # those reported: a batch cut short by close() is not
        "cpu_s": cpu_s,
        "split": {name: spent / cpu_s for name, spent in split.items()},
        "appender": appended,
    }


def _time_spent_in(cls: Any, names: tuple[str, ...]) -> dict[str, float]:
    """CPU seconds spent in each of `cls`'s methods `names`, kept up to date in the dict returned."""
    spent = dict.fromkeys(names, 0.0)
    for name in names:
        method = getattr(cls, name)

        def timed(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[_name] += time.process_time() - started

        setattr(cls, name, timed)
    return spent


def interleaved(
    work: Path, count: int, events_per_request: int, rate: float, group: int, flush_s: float
) -> dict[str, Any]:
    """Child: the same work in one process, in a fixed order (steadier on a busy machine): a
    flush period's worth of group commits by an appending spool, then the writer's drain until
    the spool is empty, again and again; each side's CPU counted around its own calls."""
    from tlytics.spool import Spool
    from tlytics.store.sqlite import SQLiteWriter
    from tlytics.writer import drain_batch
    from tlytics.writer.resources import WriterResources

    spool_dir = work / "spools" / "spool"
    values = entries(count, events_per_request)
    server = Spool(spool_dir, checkpoint_on_append=False, min_free_bytes=MIN_FREE_BYTES)
    resources = WriterResources(
        Spool(spool_dir), Spool(spool_dir.with_name("quarantine")), lambda: SQLiteWriter(work / "store.db")
    )
    resources.store  # noqa: B018 - opened (and migrated) outside the measurement
    split = _time_spent_in(Spool, ("remove", "checkpoint", "iter_oldest"))
    per_period = max(group, int(rate * flush_s))
    writer_s = appender_s = writer_sys_s = 0.0
    drained = inserted = 0
    for period in range(0, count, per_period):
        started = time.process_time()
        for start in range(period, min(count, period + per_period), group):
            server.append_many(as_group_commit(values[start : min(start + group, period + per_period, count)]))
        appender_s += time.process_time() - started
        started, before = time.process_time(), os.times()
        while True:
            result = drain_batch(resources, BATCH_MAX_ENTRIES, BATCH_MAX_EVENTS)
            if not result.entries and not result.quarantined:
                break
            drained += result.entries
            inserted += result.inserted
        writer_s += time.process_time() - started
        writer_sys_s += os.times().system - before.system
    resources.close_store()
    server.close()
    return {
        "entries": drained,
        "inserted": inserted,
        "cpu_s": writer_s,
        "split": {name: spent / writer_s for name, spent in split.items()} | {"kernel": writer_sys_s / writer_s},
        "appender": {"cpu_s": appender_s},
    }


def run_side(code_root: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    if work.exists():
        shutil.rmtree(work)
    (work / "spools").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    spool_dir = work / "spools" / "spool"
    appender = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--append",
        str(spool_dir),
        f"--requests={args.requests}",
        f"--events-per-request={args.events_per_request}",
        f"--rate={args.rate}",
        f"--group={args.group}",
    ]
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--drain",
        str(work),
        f"--flush={args.flush}",
        "--",
        *appender,
    ]
    if args.interleaved:
        command = [*appender[:2], "--interleaved-child", str(work), *appender[4:], f"--flush={args.flush}"]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=900)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="entries appended")
    parser.add_argument("--events-per-request", type=int, default=1)
    parser.add_argument("--rate", type=float, default=2_000.0, help="entries appended per second")
    parser.add_argument("--group", type=int, default=8, help="entries per group commit")
    parser.add_argument("--flush", type=float, default=1.0, help="the writer's flush period, seconds")
    parser.add_argument("--old", type=Path, help="another checkout to compare with, in the same run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="one process: appends and drains take turns in a fixed order (steadier)",
    )
    parser.add_argument("--interleaved-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--append", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--drain", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("appender", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.append is not None:
        print(json.dumps(append(args.append, args.requests, args.events_per_request, args.rate, args.group)))
        return
    if args.interleaved_child is not None:
        work = args.interleaved_child
        print(json.dumps(interleaved(work, args.requests, args.events_per_request, args.rate, args.group, args.flush)))
        return
    if args.drain is not None:
        spool_dir = args.drain / "spools" / "spool"
        print(json.dumps(drain(spool_dir, args.drain / "store.db", args.appender, args.flush)))
        return
    sides = {"new": ROOT} | ({"old": args.old.resolve()} if args.old else {})
    total = args.requests * args.events_per_request
    writer: dict[str, list[float]] = {name: [] for name in sides}
    appender: dict[str, list[float]] = {name: [] for name in sides}
    shares: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    batches: dict[str, list[int]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="tlytics-writer-live-") as scratch:
        for round_ in range(args.rounds):
            order = sorted(sides.items(), reverse=bool(round_ % 2))
            for name, root in order:
                result = run_side(root, Path(scratch) / name, args)
                if result["inserted"] != total or result.get("left", 0):
                    raise SystemExit(f"{name}: stored {result['inserted']} of {total} events")
                writer[name].append(result["cpu_s"] / args.requests * 1e6)
                appender[name].append(result["appender"]["cpu_s"] / args.requests * 1e6)
                shares[name].append(result["split"])
                batches[name].append(result.get("batches", 0))
    print(
        f"{args.requests} entries x {args.events_per_request} events at {args.rate:g}/s in groups of"
        f" {args.group}, flush {args.flush:g} s, {args.rounds} rounds"
    )
    for name in sides:
        print(
            f"{name}: writer CPU per entry median {statistics.median(writer[name]):.2f} µs"
            f" ({', '.join(f'{v:.2f}' for v in writer[name])});"
            f" appender {statistics.median(appender[name]):.2f} µs"
            f" ({', '.join(f'{v:.2f}' for v in appender[name])})"
        )
        print(
            f"  batches {statistics.median(batches[name]):.0f}; shares of the writer's CPU (median): "
            + ", ".join(
                f"spool {method} {statistics.median(split[method] for split in shares[name]):.0%}"
                for method in shares[name][0]
            )
        )
    if "old" in sides:
        for label, figures in (("writer", writer), ("appender", appender)):
            ratios = [new / old for new, old in zip(figures["new"], figures["old"], strict=True)]
            print(
                f"{label} new / old: median of the rounds' ratios {statistics.median(ratios):.2f}"
                f" ({', '.join(f'{r:.2f}' for r in ratios)})"
            )


if __name__ == "__main__":
    main()
