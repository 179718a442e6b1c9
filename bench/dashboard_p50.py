"""Issue 21's six dashboard questions on one store already filled, through the real server:
the p50 of each, with its samples. `bench.view --only compare` asks the same questions of an
undeclared and a declared server side by side; at 10M events the undeclared side takes minutes
per question, so this asks the declared store alone (or any store), e.g. before and after a
change on two copies of it.

    python -m bench.dashboard_p50 --db /tmp/scale21/declared-10m.db --events 10000000 --days 60 \\
        --property data.amount --property data.path --property data.user_id --repeats 5

The store must have been filled by `bench.view` (its events, one every days/events apart) with
the same `--events` and `--days`, so that "the last 30 days" are the same window.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import bench.view as view
from bench.declared_scale import started_server, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="a store filled by bench.view")
    parser.add_argument("--events", type=int, default=10_000_000, help="the events it was filled with")
    parser.add_argument("--days", type=float, default=60, help="the days they were spread over")
    parser.add_argument("--property", action="append", default=[], help="declared on the server (repeatable)")
    parser.add_argument("--repeats", type=int, default=5, help="samples of each question")
    parser.add_argument("--only", default="", help="comma-separated parts of question names to ask")
    args = parser.parse_args()
    # The fill's spacing, as bench.view's main sets it: the questions' windows follow from it.
    view.STEP_US = max(1, int(args.days * 86_400_000_000) // args.events)
    wanted = [part for part in args.only.split(",") if part]
    flags = [flag for text in args.property for flag in ("--property", text)]
    process, url = started_server(["--db", str(args.db), *flags])
    try:
        for name, question in view.dashboard_questions(args.events).items():
            if wanted and not any(part in name for part in wanted):
                continue
            samples = []
            for _ in range(args.repeats):
                asked = time.perf_counter()
                with urllib.request.urlopen(url + question, timeout=900) as response:
                    response.read()
                samples.append((time.perf_counter() - asked) * 1000)
            rounded = [round(sample) for sample in samples]
            print(f"{name:36} p50 {statistics.median(samples):9.1f} ms  all {rounded}", flush=True)
    finally:
        stopped(process)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
