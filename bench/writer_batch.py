"""The writer's instructions per stored event (valgrind's callgrind): deterministic, so a busy
machine does not move it, unlike CPU time. The real writer code (`bench.writer_cpu`'s drain:
`tlytics.writer.drain_batch` at the server's batch sizes) drains a spool of SMALL requests and
one of LARGE requests into a fresh SQLite store; (instructions of LARGE - those of SMALL) ÷
the events between them leaves out start-up, imports and opening.

    python -m bench.writer_batch                             # this checkout
    python -m bench.writer_batch --old /tmp/old-checkout     # and another, same spools

About 2-4 minutes per checkout on an idle 2-core box (callgrind runs ~50x slower); the drains
run side by side, one process each.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.writer_cpu import build_spool

ROOT = Path(__file__).resolve().parent.parent
DRAIN = """
import json, sys
from pathlib import Path
sys.path.append({bench_root!r})
from bench.writer_cpu import drain
print(json.dumps(drain(Path({spool!r}), Path({store!r}), False, [])))
"""


def instructions(code_root: Path, spool_master: Path, work: Path) -> subprocess.Popen[str]:
    """Start draining a copy of `spool_master` with the code of `code_root` under callgrind."""
    work.mkdir(parents=True)
    shutil.copytree(spool_master, work / "spool")
    script = DRAIN.format(bench_root=str(ROOT), spool=str(work / "spool"), store=str(work / "store.db"))
    env = {**os.environ, "PYTHONPATH": str(code_root), "PYTHONHASHSEED": "0"}
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work / 'callgrind.out'}"]
    return subprocess.Popen(
        [*command, sys.executable, "-c", script],
        env=env,
        cwd=code_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def total_instructions(work: Path) -> int:
    found = re.search(r"^(?:summary|totals): (\d+)", (work / "callgrind.out").read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"no instruction count in {work / 'callgrind.out'}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100, help="requests in the small spool")
    parser.add_argument("--large", type=int, default=600, help="requests in the large spool")
    parser.add_argument("--events-per-request", type=int, default=100)
    parser.add_argument("--old", type=Path, help="another checkout to compare with, on the same spools")
    args = parser.parse_args()
    sides = {"new": ROOT} | ({"old": args.old.resolve()} if args.old else {})
    with tempfile.TemporaryDirectory(prefix="tlytics-writer-batch-") as scratch:
        masters = {}
        for requests in (args.small, args.large):
            masters[requests] = Path(scratch) / f"master-{requests}" / "spool"
            masters[requests].parent.mkdir()
            build_spool(masters[requests], requests, args.events_per_request)
        running = {
            (name, requests): (instructions(root, master, Path(scratch) / f"{name}-{requests}"))
            for name, root in sides.items()
            for requests, master in masters.items()
        }
        for (name, requests), process in running.items():
            _out, errors = process.communicate(timeout=3600)
            if process.returncode != 0:
                raise SystemExit(f"the drain of {name}, {requests} requests, failed:\n{errors}")
        events = (args.large - args.small) * args.events_per_request
        per_event = {
            name: (
                total_instructions(Path(scratch) / f"{name}-{args.large}")
                - total_instructions(Path(scratch) / f"{name}-{args.small}")
            )
            / events
            for name in sides
        }
    for name, value in per_event.items():
        print(f"{name}: {value:,.0f} instructions per stored event ({args.large} - {args.small} requests)")
    if "old" in per_event:
        print(f"new / old: {per_event['new'] / per_event['old']:.3f}")


if __name__ == "__main__":
    main()
