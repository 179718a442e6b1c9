"""Ingest benchmark: the real `tlytics` server under wrk on 127.0.0.1, against a bare
aiohttp+orjson ceiling measured in the same run, plus the client's emit() and delivery.

    python -m bench.ingest                 # full run (about 8 minutes)
    python -m bench.ingest --duration 10   # the short mode: both body sizes, no extras (~2 minutes)
    python -m bench.ingest --duration 10 --rounds 3 --old /tmp/old-checkout   # A/B, same rounds
    python -m bench.ingest --store postgresql --only server   # + one and two nodes on PostgreSQL

Prints a table and writes bench/results/ingest-<timestamp>.json. Needs Debian's wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.ingest_table import COMPARISON_HEADER, comparison_rows, format_table, table_rows
from bench.proctree import peak_rss_tree_mb, process_cpu_s, tree_cpu

__all__ = ["bench_ceiling", "bench_tlytics", "format_table", "table_rows"]

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("post.lua")
RESULTS = Path(__file__).with_name("results")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(port: int, *flags: str) -> list[str]:
    """The command line of the real `tlytics` server on 127.0.0.1:`port` with `flags`."""
    return [sys.executable, "-m", "tlytics", "--host", "127.0.0.1", "--port", str(port), *flags]


def get_json(url: str, timeout_s: float = 10.0) -> Any:
    """The JSON answer, also of a 503 (/health answers 503 with its figures while it cannot
    accept, e.g. with a full spool)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            get_json(url + "/health", 1.0)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def run_wrk(url: str, events_per_request: int, duration_s: int, connections: int, threads: int) -> dict[str, Any]:
    completed = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
            "--",
            str(events_per_request),
            "/events",
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 120,
        check=True,
    )
    line = next(row for row in completed.stdout.splitlines() if row.startswith("WRK_RESULT "))
    return dict(json.loads(line.removeprefix("WRK_RESULT ")))


class Sampler(threading.Thread):
    """Polls /health once a second: spool backlog and stored count over time."""

    def __init__(self, url: str, started: float) -> None:
        super().__init__(daemon=True)
        self.url, self.started = url, started
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                health = get_json(self.url + "/health", 5.0)
            except OSError:
                continue
            self.samples.append(
                {
                    "t_s": round(time.monotonic() - self.started, 1),
                    "spool_entries": health["spool_entries"],
                    "spool_mb": round(health["spool_bytes"] / 2**20, 1),
                    "stored": health["stored_events"],
                }
            )


def bench_ceiling(
    events_per_request: int, duration_s: int, args: argparse.Namespace, *, uvloop: bool = False
) -> dict[str, Any]:
    """The bare aiohttp handler under the same load; by default on asyncio's own loop, as a
    user's default install of aiohttp runs (`uvloop=True`: on uvloop, as Tlytics runs)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.ceiling", str(port), *(["--uvloop"] if uvloop else [])],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(url, process)
        cpu_before = process_cpu_s(process.pid)
        wrk = run_wrk(url, events_per_request, duration_s, args.connections, args.threads)
        cpu_s = process_cpu_s(process.pid) - cpu_before
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    seconds = wrk["duration_us"] / 1e6
    ok = wrk["ok"]
    return {
        "uvloop": uvloop,
        "requests_per_s": ok / seconds,
        "events_per_s": ok * events_per_request / seconds,
        "cpu_us_per_request": cpu_s / ok * 1e6 if ok else 0.0,
        "cpu_us_per_event": cpu_s / (ok * events_per_request) * 1e6 if ok else 0.0,
        "p50_ms": wrk["p50_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000,
        "wrk": wrk,
    }


def wait_drained(url: str, timeout_s: float = 900) -> dict[str, Any]:
    """/health once the spool is empty and the store holds every acknowledged event."""
    health: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = get_json(url + "/health")
        if health["spool_entries"] == 0 and (health["stored_events"] or 0) >= health["accepted_events"]:
            break
        time.sleep(0.05)
    return health


def bench_tlytics(
    events_per_request: int,
    duration_s: int,
    args: argparse.Namespace,
    spool_sync: str = "normal",
    log_level: str | None = None,
    code_root: Path = ROOT,
) -> dict[str, Any]:
    """The real server (the code at `code_root`: this checkout, or another one to compare
    with) under wrk, from a fresh db and spool until its spool is drained."""
    log_level = log_level or args.log_level
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-bench-"))
    command = server_command(
        port,
        "--db",
        str(workdir / "bench.db"),
        "--spool",
        str(workdir / "spool"),
        "--spool-sync",
        spool_sync,
        "--flush",
        args.flush,
        "--log-level",
        log_level,
    )
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    # The log goes to a file, as in production (a pipe to journald costs about the same).
    with (workdir / "server.log").open("wb") as log_file:
        process = subprocess.Popen(command, cwd=code_root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, process)
        before = get_json(url + "/health")
        cpu_before = tree_cpu(process.pid)
        started = time.monotonic()
        sampler = Sampler(url, started)
        sampler.start()
        wrk = run_wrk(url, events_per_request, duration_s, args.connections, args.threads)
        load_ended = time.monotonic()
        at_load_end = get_json(url + "/health")
        health = wait_drained(url)
        drained = time.monotonic()
        # Load start through drain, every process of the server's tree (the writer included).
        cpu = tree_cpu(process.pid) - cpu_before
        sampler.stop.set()
        rss_mb, writer_rss_mb = peak_rss_tree_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    load_s = wrk["duration_us"] / 1e6
    acknowledged_events = wrk["ok"] * events_per_request
    requests_per_s = wrk["ok"] / load_s
    stored = (health["stored_events"] or 0) - (before["stored_events"] or 0)
    # Every accepted request with events is one spool entry (an empty one is not spooled).
    entries = health["accepted_requests"] - before["accepted_requests"]
    return {
        "code": str(code_root),
        "spool_sync": spool_sync,
        "log_level": log_level,
        "acknowledged_requests_per_s": requests_per_s,
        "acknowledged_events_per_s": acknowledged_events / load_s,
        "stored_events_per_s_end_to_end": stored / (drained - started),
        "drain_after_load_s": round(drained - load_ended, 2),
        # What was still spooled when the load stopped, in seconds of the run's intake: the
        # writer keeps up when this stays small however long the run.
        "backlog_at_load_end_entries": at_load_end["spool_entries"],
        "backlog_at_load_end_s": at_load_end["spool_entries"] / requests_per_s if requests_per_s else 0.0,
        # CPU of the whole tree (ingest + writer), load start until drained.
        "cpu_s": cpu.total_s,
        "cpu_ingest_s": cpu.ingest_s,
        "cpu_writer_s": cpu.writer_s,
        "cpu_us_per_request": cpu.total_s / wrk["ok"] * 1e6 if wrk["ok"] else 0.0,
        "cpu_us_per_stored_event": cpu.total_s / stored * 1e6 if stored else 0.0,
        "server_cpu_us_per_request": cpu.ingest_s / entries * 1e6 if entries else 0.0,
        "writer_cpu_us_per_spool_entry": cpu.writer_s / entries * 1e6 if entries else 0.0,
        "p50_ms": wrk["p50_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000,
        "peak_rss_mb": round(rss_mb, 1),
        "peak_rss_writer_process_mb": round(writer_rss_mb, 1),
        "peak_rss_total_mb": round(rss_mb + writer_rss_mb, 1),
        "acknowledged_events_wrk": acknowledged_events,
        "acknowledged_events_server": health["accepted_events"],
        "spool_entries_written": entries,
        "stored_events": stored,
        # wrk cannot count answers to requests still in flight when it stops; the server can.
        "stored_equals_acknowledged": stored == health["accepted_events"],
        "non_200": wrk["not_ok"],
        "backlog": sampler.samples,
        "wrk": wrk,
    }


def bench_nodes(node_count: int, store_url: str, duration_s: int, args: argparse.Namespace) -> dict[str, Any]:
    """`node_count` ingest nodes on one PostgreSQL store, each with its own spool, each under
    its own wrk (the connections split between them), 100-event requests; stored end to end is
    what the shared store holds once every node's spool is drained."""
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-bench-nodes-"))
    ports = [free_port() for _ in range(node_count)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    processes = [
        subprocess.Popen(
            server_command(
                port,
                "--store",
                store_url,
                "--spool",
                str(workdir / f"node-{n}.spool"),
                "--flush",
                args.flush,
                "--log-level",
                args.log_level,
            ),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n, port in enumerate(ports)
    ]
    try:
        for url, process in zip(urls, processes, strict=True):
            wait_healthy(url, process)
        before = get_json(urls[0] + "/health")["stored_events"] or 0
        started = time.monotonic()
        runs: list[dict[str, Any]] = [{} for _ in urls]
        connections = max(1, args.connections // node_count)

        def load(index: int) -> None:
            runs[index] = run_wrk(urls[index], 100, duration_s, connections, args.threads)

        loaders = [threading.Thread(target=load, args=(index,)) for index in range(node_count)]
        for loader in loaders:
            loader.start()
        for loader in loaders:
            loader.join()
        accepted = stored = 0
        problems: set[str] = set()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            healths = [get_json(url + "/health") for url in urls]
            problems.update(problem.split(" (")[0] for h in healths for problem in h.get("problems", []))
            accepted = sum(h["accepted_events"] for h in healths)
            stored = (healths[0]["stored_events"] or 0) - before
            if all(h["spool_entries"] == 0 for h in healths) and stored >= accepted:
                break
            time.sleep(0.2)
        drained = time.monotonic()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    load_s = max(run["duration_us"] for run in runs) / 1e6
    return {
        "nodes": node_count,
        "acknowledged_events_per_s": sum(run["ok"] for run in runs) * 100 / load_s,
        "stored_events_per_s_end_to_end": stored / (drained - started),
        "p99_ms": max(run["p99_us"] for run in runs) / 1000,
        "acknowledged_events_server": accepted,
        "stored_events": stored,
        "stored_equals_acknowledged": stored == accepted,
        "non_200": sum(run["not_ok"] for run in runs),
        "health_problems_seen": sorted(problems),
        "wrk": runs,
    }


def bench_postgres(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """One node and two nodes on a PostgreSQL cluster of their own (fsync on), beside the
    SQLite figure of the same run."""
    sys.path.insert(0, str(ROOT))
    from tests.postgres_cluster import PostgresCluster, postgres_missing

    missing = postgres_missing()
    if missing is not None:
        print(f"PostgreSQL skipped: {missing}")
        return
    cluster = PostgresCluster(fsync=True)
    try:
        cluster.start()
        sqlite = results["events_100"]["tlytics"]["stored_events_per_s_end_to_end"]
        for node_count in (1, 2):
            url = cluster.create_database(f"bench{node_count}")
            ours = bench_nodes(node_count, url, args.sustained, args)
            ours["ratio_to_sqlite_stored"] = ours["stored_events_per_s_end_to_end"] / sqlite
            results[f"postgresql_{node_count}_nodes"] = ours
            print(
                f"postgresql {node_count} node{'s' if node_count > 1 else ' '}  ack {ours['acknowledged_events_per_s']:>8,.0f} ev/s"
                f"  stored e2e {ours['stored_events_per_s_end_to_end']:>8,.0f} ev/s  ratio to SQLite stored"
                f" {ours['ratio_to_sqlite_stored']:.2f}  p99 {ours['p99_ms']:.1f} ms  stored==acked {ours['stored_equals_acknowledged']}"
                f"  non-200 {ours['non_200']}  problems {ours['health_problems_seen']}",
                flush=True,
            )
    finally:
        cluster.remove()


def bench_client(args: argparse.Namespace) -> dict[str, Any]:
    """The client library's figures for the table, measured as `python -m bench.client` measures
    them (its functions: one way to measure the client): delivery, then emit() with the sender
    delivering a backlog meanwhile."""
    from bench import client as client_bench  # imported here: bench.client imports this module

    n = args.client_events
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-bench-client-"))
    process, url = client_bench.start_server(workdir)
    try:
        delivery = client_bench.bench_delivery(url, workdir, n)
        emit = client_bench.bench_emit(url, workdir, n)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "events": n,
        "emit_p50_us": emit["p50_us"],
        "emit_p99_us": emit["p99_us"],
        "emit_max_us": emit["max_us"],
        "emits_per_s": emit["emits_per_s"],
        "delivered_all": delivery["delivered_all"] and emit["delivered_all"],
        "delivery_events_per_s": delivery["events_per_s"],
        "client_cpu_us_per_event": delivery["client_cpu_us_per_event"],
    }


def compared(ours: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    """One Tlytics run beside the ceiling of the same round: each figure as a ratio."""
    return {
        "ceiling": ceiling,
        "tlytics": ours,
        "ratio_acknowledged_events": ours["acknowledged_events_per_s"] / ceiling["events_per_s"],
        "ratio_stored_events": ours["stored_events_per_s_end_to_end"] / ceiling["events_per_s"],
        "ratio_cpu_per_event": ours["cpu_us_per_stored_event"] / ceiling["cpu_us_per_event"]
        if ceiling["cpu_us_per_event"]
        else 0.0,
        "ratio_server_cpu_per_request": ours["server_cpu_us_per_request"] / ceiling["cpu_us_per_request"]
        if ceiling["cpu_us_per_request"]
        else 0.0,
    }


def compared_rounds(args: argparse.Namespace, sides: dict[str, Path]) -> dict[str, Any]:
    """Per round and per body size: the ceiling (asyncio's loop), then each side's server,
    the sides' order alternating between rounds so a machine getting busier slows both."""
    rounds: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        this_round: dict[str, Any] = {}
        for n, duration in ((100, args.sustained), (1, args.duration)):
            ceiling = bench_ceiling(n, args.duration, args)
            if args.uvloop_ceiling:
                this_round[f"ceiling_uvloop_{n}"] = bench_ceiling(n, args.duration, args, uvloop=True)
            for side in order:
                this_round[f"{side}_{n}"] = compared(bench_tlytics(n, duration, args, code_root=sides[side]), ceiling)
                print(f"round {round_index + 1}: {side}, {n} events/request", flush=True)
        rounds.append(this_round)
    return {"sides": {side: str(root) for side, root in sides.items()}, "rounds": rounds}


def server_runs(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The server's configurations, each beside a ceiling measured in the same round."""
    sides = {"new": ROOT} | ({"old": args.old.resolve()} if args.old else {})
    runs = compared_rounds(args, sides)
    results["comparison"] = runs
    last = runs["rounds"][-1]
    for n in (100, 1):
        results[f"events_{n}"] = last[f"new_{n}"]
        if args.uvloop_ceiling:
            results[f"events_{n}"]["ceiling_uvloop"] = last[f"ceiling_uvloop_{n}"]
    if not args.extras:
        return
    # The per-request log line's cost: the 1-event run again with it off (what it costs
    # shows most where requests are smallest).
    quiet = bench_tlytics(1, args.duration, args, log_level="warning")
    with_log = results["events_1"]["tlytics"]
    results["events_1_log_off"] = {
        "tlytics": quiet,
        "ratio_log_on_to_off_requests": with_log["acknowledged_requests_per_s"] / quiet["acknowledged_requests_per_s"],
        "ratio_log_on_to_off_cpu_per_request": with_log["cpu_us_per_request"] / quiet["cpu_us_per_request"],
    }
    print("done: 1 event/request, log off", flush=True)
    full = bench_tlytics(100, args.duration, args, spool_sync="full")
    normal = results["events_100"]["tlytics"]
    results["spool_sync_full"] = {
        "tlytics": full,
        "ratio_to_normal_acknowledged": full["acknowledged_events_per_s"] / normal["acknowledged_events_per_s"],
    }
    print("done: --spool-sync full", flush=True)
    if args.store == "postgresql":
        bench_postgres(args, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=30, help="seconds per load run (default 30)")
    parser.add_argument(
        "--sustained", type=int, help="seconds of the 100-event run (default 60; with --duration under 30, the same)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of ceiling + server runs (default 1)")
    parser.add_argument("--old", type=Path, help="another checkout whose server runs beside this one, same rounds")
    parser.add_argument("--uvloop-ceiling", action="store_true", help="also the ceiling on uvloop (a line of its own)")
    parser.add_argument(
        "--extras",
        action=argparse.BooleanOptionalAction,
        help="log-off, --spool-sync full and client runs (default: on unless --duration is under 30)",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (one leaves the most CPU to the server)")
    parser.add_argument("--flush", default="1s", help="server flush period")
    parser.add_argument(
        "--log-level", default="info", help="server log level (default info: the per-request line on, as deployed)"
    )
    parser.add_argument("--client-events", type=int, default=200_000)
    parser.add_argument("--only", choices=["server", "client"], help="run one part only")
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="postgresql: also one and two nodes on a PostgreSQL cluster the benchmark starts (needs Debian's postgresql)",
    )
    parser.add_argument("--output", type=Path, help="the JSON file to write (default bench/results/ingest-<time>.json)")
    args = parser.parse_args()
    short = args.duration < 30
    if args.sustained is None:
        args.sustained = args.duration if short else 60
    if args.extras is None:
        args.extras = not short
    if shutil.which("wrk") is None and args.only != "client":
        sys.exit("wrk is not installed: apt-get install -y wrk")

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "options": {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()},
    }
    if args.only != "client":
        server_runs(args, results)
    if args.only != "server" and args.extras:
        results["client"] = bench_client(args)
    print(format_table(table_rows(results)), flush=True)
    if args.old is not None:
        print()
        print(format_table(comparison_rows(results["comparison"]), COMPARISON_HEADER), flush=True)
    out = args.output or RESULTS / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
