"""The ingest process's CPU per request at 1 event per request, A/B: this checkout's server
and another checkout's (and the parse-only ceiling), alternating, several rounds, one short wrk
load each. Quicker and steadier than `bench.ingest` for one figure: the ingest process alone
(its threads included, not the writer process), during the load only (not the drain).

    python -m bench.request_cpu --old /tmp/old-checkout --rounds 5 --duration 6

Prints each round's figures and the median of new ÷ old and of each ÷ the ceiling.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.ingest import ROOT, free_port, run_wrk, server_command, wait_healthy
from bench.proctree import process_cpu_s

_WARM_UP_S = 2


def _measure(process: subprocess.Popen[bytes], url: str, args: argparse.Namespace, events: int) -> dict[str, Any]:
    wait_healthy(url, process)
    run_wrk(url, events, _WARM_UP_S, args.connections, 1)
    before = process_cpu_s(process.pid)
    wrk = run_wrk(url, events, args.duration, args.connections, 1)
    cpu_s = process_cpu_s(process.pid) - before
    return {"cpu_us_per_request": cpu_s / wrk["ok"] * 1e6, "requests_per_s": wrk["ok"] / (wrk["duration_us"] / 1e6)}


def server_cpu(code_root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """CPU per request of the server at `code_root`, the per-request log line on (to a file)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="tlytics-request-cpu-") as workdir:
        command = server_command(
            port,
            *("--db", f"{workdir}/bench.db", "--spool", f"{workdir}/spool", "--flush", "1s"),
            *("--log-level", args.log_level),
        )
        env = {"PYTHONPATH": str(code_root), "PATH": "/usr/bin:/bin"}
        with Path(workdir, "server.log").open("wb") as log_file:
            process = subprocess.Popen(command, cwd=code_root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            return _measure(process, url, args, args.events)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def ceiling_cpu(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bench.ceiling", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _measure(process, url, args, args.events)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds of load per run")
    parser.add_argument("--events", type=int, default=1, help="events per request")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    rows: list[dict[str, float]] = []
    for round_index in range(args.rounds):
        row: dict[str, float] = {}
        sides: list[tuple[str, Path | None]] = [("new", ROOT), ("ceiling", None)]
        if args.old is not None:
            sides.insert(1 if round_index % 2 else 0, ("old", args.old))
        for name, root in sides:
            figures = ceiling_cpu(args) if root is None else server_cpu(root, args)
            row[name] = figures["cpu_us_per_request"]
            row[f"{name}_rps"] = figures["requests_per_s"]
        rows.append(row)
        line = "  ".join(f"{name} {value:8.1f}" for name, value in row.items())
        print(f"round {round_index + 1}: {line}", flush=True)
    for name in ("new", "old"):
        if name in rows[0]:
            ratios = [row[name] / row["ceiling"] for row in rows]
            print(f"{name} ÷ ceiling (CPU/request): median {statistics.median(ratios):.2f}  {_fmt(ratios)}")
            rps = [row[f"{name}_rps"] / row["ceiling_rps"] for row in rows]
            print(f"{name} ÷ ceiling (req/s): median {statistics.median(rps):.2f}  {_fmt(rps)}")
    if args.old is not None:
        ratios = [row["new"] / row["old"] for row in rows]
        print(f"new ÷ old (CPU/request): median {statistics.median(ratios):.2f}  {_fmt(ratios)}")


def _fmt(values: list[float]) -> str:
    return "(" + ", ".join(f"{value:.2f}" for value in values) + ")"


if __name__ == "__main__":
    main()
