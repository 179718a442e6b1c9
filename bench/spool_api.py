"""The spool's operations done through diskcache's public API vs through the adapter
(tlytics/spool/diskcache_adapter.py, its private `_sql`/`_con`), same run, same settings.

    python -m bench.spool_api                 # 5 rounds, 100 B and 10 KB entries
    python -m bench.spool_api --rounds 3 --batch 200

Each round, for each entry size and each way, on a fresh spool directory: append `--batches`
groups of `--batch` entries (one transaction per group, as a group commit does), read the
oldest `--batch` without consuming them, remove them after "delivery" (one transaction per
group, as the writer does), and count/size. The public way is push() per entry, iterkeys()
plus get() per key, delete() per key; the adapter's is a statement or two per group. Prints
the median over rounds of each time and public ÷ adapter ratios, and writes bench/results/.
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

import diskcache

from tlytics.spool.diskcache_adapter import NEVER_A_SIDE_FILE, DiskcacheQueue

RESULTS = Path(__file__).parent / "results"
OPERATIONS = ("append", "peek", "remove", "count_size")


def _open_public(directory: Path) -> diskcache.Cache:
    return diskcache.Cache(
        str(directory),
        eviction_policy="none",
        disk_min_file_size=NEVER_A_SIDE_FILE,
        sqlite_synchronous=1,
        sqlite_journal_size_limit=4 * 1024 * 1024,
    )


def _open_adapter(directory: Path) -> DiskcacheQueue:
    return DiskcacheQueue(str(directory), timeout_s=30.0, synchronous=1, journal_size_limit=4 * 1024 * 1024)


def run_public(directory: Path, values: list[bytes], batches: int) -> dict[str, float]:
    cache = _open_public(directory)
    times = dict.fromkeys(OPERATIONS, 0.0)
    try:
        for _ in range(batches):
            started = time.perf_counter()
            with cache.transact():
                for value in values:
                    cache.push(value)
            times["append"] += time.perf_counter() - started
        for _ in range(batches):
            started = time.perf_counter()
            keys = []
            for key in cache.iterkeys():
                keys.append(key)
                if len(keys) == len(values):
                    break
            peeked = [(key, cache.get(key)) for key in keys]
            times["peek"] += time.perf_counter() - started
            assert len(peeked) == len(values)
            started = time.perf_counter()
            with cache.transact():
                for key, _ in peeked:
                    cache.delete(key)
            times["remove"] += time.perf_counter() - started
            started = time.perf_counter()
            len(cache), cache.volume()
            times["count_size"] += time.perf_counter() - started
        assert len(cache) == 0
    finally:
        cache.close()
    return times


def run_adapter(directory: Path, values: list[bytes], batches: int) -> dict[str, float]:
    queue = _open_adapter(directory)
    times = dict.fromkeys(OPERATIONS, 0.0)
    try:
        for _ in range(batches):
            started = time.perf_counter()
            with queue.transact():
                queue.append(values)
            times["append"] += time.perf_counter() - started
        for _ in range(batches):
            started = time.perf_counter()
            peeked = list(queue.iter_oldest(len(values), -1))
            times["peek"] += time.perf_counter() - started
            assert len(peeked) == len(values)
            started = time.perf_counter()
            with queue.transact():
                queue.remove([key for key, _ in peeked])
            times["remove"] += time.perf_counter() - started
            started = time.perf_counter()
            queue.count(), queue.volume()
            times["count_size"] += time.perf_counter() - started
        assert queue.count() == 0
    finally:
        queue.close()
    return times


def bench(rounds: int, batch: int, batches: int, sizes: list[int]) -> dict[str, Any]:
    ways: dict[str, Callable[[Path, list[bytes], int], dict[str, float]]] = {
        "public": run_public,
        "adapter": run_adapter,
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="spool-api-") as scratch:
        for size in sizes:
            values = [bytes([65 + i % 26]) * size for i in range(batch)]
            samples: dict[str, dict[str, list[float]]] = {way: {op: [] for op in OPERATIONS} for way in ways}
            for round_ in range(rounds):
                # Alternate which way goes first, so neither always runs on a warmer machine.
                order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
                for way in order:
                    directory = Path(scratch) / f"{way}-{size}-{round_}"
                    for op, seconds in ways[way](directory, values, batches).items():
                        samples[way][op].append(seconds)
                    shutil.rmtree(directory)
            medians = {way: {op: statistics.median(samples[way][op]) for op in OPERATIONS} for way in ways}
            results[f"{size}_bytes"] = {
                "median_s": medians,
                "public_over_adapter": {op: medians["public"][op] / medians["adapter"][op] for op in OPERATIONS},
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="entries per transaction and per read")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    args = parser.parse_args()
    results = bench(args.rounds, args.batch, args.batches, args.sizes)
    print(f"{'entry size':>10}  {'operation':<10}  {'public ms':>10}  {'adapter ms':>10}  public/adapter")
    for size, figures in results.items():
        for op in OPERATIONS:
            public, adapter = figures["median_s"]["public"][op], figures["median_s"]["adapter"][op]
            ratio = figures["public_over_adapter"][op]
            print(f"{size:>10}  {op:<10}  {public * 1000:>10.1f}  {adapter * 1000:>10.1f}  {ratio:>6.1f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"spool_api-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
