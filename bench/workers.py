"""`--workers N` against one process, in the same run: the real `tlytics` server under wrk on
127.0.0.1 (100 events per request), N=1 and N=2 (or those given) alternating, each run from a
fresh store, CPU read from /proc for the whole process tree (supervisor, workers, writer) from
the load's start until the spool is drained.

    python -m bench.workers                          # 2 rounds of 10 s each, N=1 then N=2
    python -m bench.workers --rounds 3 --duration 20 --workers 1 2 3

Prints, per run, events/s acknowledged, events/s stored end to end and CPU µs per stored
event, and per round the ratio of each N to N=1. Needs Debian's wrk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ingest import (
    ROOT,
    cpu_seconds,
    cpu_seconds_with_children,
    free_port,
    get_json,
    run_wrk,
    server_command,
    wait_healthy,
)

EVENTS_PER_REQUEST = 100


def writer_pid(log: Path) -> int:
    """The writer process's pid, from its `writer_started` log line (it starts on first use)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if '"writer_started"' in line:
                return int(json.loads(line)["pid"])
        time.sleep(0.1)
    raise RuntimeError("the writer did not start")


def bench_workers(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run of the server with `--workers workers` under wrk, through the drain."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-bench-workers-"))
    command = server_command(
        port, "--db", str(workdir / "bench.db"), "--flush", args.flush, "--workers", str(workers), "--log-level", "info"
    )
    with (workdir / "server.log").open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, process, timeout_s=120.0)
        stored_before = get_json(url + "/health")["stored_events"] or 0
        writer = writer_pid(workdir / "server.log")
        cpu_before = cpu_seconds_with_children(process.pid)
        writer_cpu_before = cpu_seconds(writer)
        started = time.monotonic()
        wrk = run_wrk(url, EVENTS_PER_REQUEST, args.duration, args.connections, args.threads)
        load_ended = time.monotonic()
        acknowledged = wrk["ok"] * EVENTS_PER_REQUEST
        health: dict[str, Any] = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            health = get_json(url + "/health")
            if health["spool_entries"] == 0 and (health["stored_events"] or 0) - stored_before >= acknowledged:
                break
            time.sleep(0.1)
        drained = time.monotonic()
        cpu_s = cpu_seconds_with_children(process.pid) - cpu_before
        writer_cpu_s = cpu_seconds(writer) - writer_cpu_before
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
        shutil.rmtree(workdir, ignore_errors=True)
    stored = (health["stored_events"] or 0) - stored_before
    load_s = wrk["duration_us"] / 1e6
    return {
        "workers": workers,
        "acknowledged_events_per_s": acknowledged / load_s,
        "stored_events_per_s_end_to_end": stored / (drained - started),
        "drain_after_load_s": round(drained - load_ended, 2),
        "cpu_us_per_stored_event": cpu_s / stored * 1e6 if stored else float("nan"),
        # The writer's part: one process for any N, so 1e6 / this bounds what N workers can store.
        "writer_cpu_us_per_stored_event": writer_cpu_s / stored * 1e6 if stored else float("nan"),
        "p99_ms": wrk["p99_us"] / 1000,
        "stored": stored,
        # wrk does not count answers still in flight when it stops: stored may be a little more.
        "stored_at_least_acknowledged": stored >= acknowledged,
        "non_200": wrk["not_ok"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flush", default="5s")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench.workers needs wrk (apt-get install wrk)")
    runs: list[dict[str, Any]] = []
    print(
        f"{'round':>5} {'N':>3} {'ack ev/s':>10} {'stored ev/s':>12} {'CPU µs/ev':>10} {'writer µs/ev':>13}"
        f" {'drain s':>8} {'p99 ms':>7}"
    )
    for round_number in range(1, args.rounds + 1):
        for workers in args.workers:
            run = {"round": round_number, **bench_workers(workers, args)}
            runs.append(run)
            print(
                f"{round_number:>5} {workers:>3} {run['acknowledged_events_per_s']:>10.0f}"
                f" {run['stored_events_per_s_end_to_end']:>12.0f} {run['cpu_us_per_stored_event']:>10.2f}"
                f" {run['writer_cpu_us_per_stored_event']:>13.2f}"
                f" {run['drain_after_load_s']:>8.2f} {run['p99_ms']:>7.1f}"
                + ("" if run["stored_at_least_acknowledged"] and not run["non_200"] else "  (!)"),
                flush=True,
            )
    base = args.workers[0]
    print(f"\nratios to N={base}, same round (median over rounds):")
    for workers in args.workers[1:]:
        for figure in (
            "cpu_us_per_stored_event",
            "writer_cpu_us_per_stored_event",
            "stored_events_per_s_end_to_end",
            "acknowledged_events_per_s",
        ):
            ratios = [
                run[figure] / first[figure]
                for run in runs
                if run["workers"] == workers
                for first in runs
                if first["workers"] == base and first["round"] == run["round"]
            ]
            print(
                f"  N={workers} {figure}: {statistics.median(ratios):.2f} (each round: {[round(r, 2) for r in ratios]})"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
