"""Ingest benchmark: the real `tlytics` server under wrk on 127.0.0.1, against a bare
aiohttp+orjson ceiling measured in the same run, plus the client's emit() and delivery.

    python -m bench.ingest                 # full run (about 8 minutes)
    python -m bench.ingest --duration 10   # a quick look
    python -m bench.ingest --store postgresql --only server   # + one and two nodes on PostgreSQL

Prints a table and writes bench/results/ingest-<timestamp>.json. Needs Debian's wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def peak_rss_with_children_mb(pid: int) -> tuple[float, float]:
    """Peak RSS of the server and of its children (the writer process)."""
    children = 0.0
    for child in child_pids(pid):
        try:
            children += peak_rss_mb(child)
        except OSError:
            pass
    return peak_rss_mb(pid), children


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_with_children(pid: int) -> float:
    """CPU time of the server and of its children (the writer process): on a shared machine
    the CPU a request costs is steadier than requests per second."""
    total = cpu_seconds(pid)
    for child in child_pids(pid):
        try:
            total += cpu_seconds(child)
        except OSError:
            pass
    return total


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


def bench_ceiling(events_per_request: int, duration_s: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.ceiling", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(url, process)
        wrk = run_wrk(url, events_per_request, duration_s, args.connections, args.threads)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    seconds = wrk["duration_us"] / 1e6
    return {
        "requests_per_s": wrk["ok"] / seconds,
        "events_per_s": wrk["ok"] * events_per_request / seconds,
        "p50_ms": wrk["p50_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000,
        "wrk": wrk,
    }


def bench_tlytics(
    events_per_request: int,
    duration_s: int,
    args: argparse.Namespace,
    spool_sync: str = "normal",
    log_level: str | None = None,
) -> dict[str, Any]:
    log_level = log_level or args.log_level
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-bench-"))
    command = server_command(
        port,
        "--db",
        str(workdir / "bench.db"),
        "--spool-sync",
        spool_sync,
        "--flush",
        args.flush,
        "--log-level",
        log_level,
    )
    # The log goes to a file, as in production (a pipe to journald costs about the same).
    with (workdir / "server.log").open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, process)
        cpu_before = cpu_seconds_with_children(process.pid)
        started = time.monotonic()
        sampler = Sampler(url, started)
        sampler.start()
        wrk = run_wrk(url, events_per_request, duration_s, args.connections, args.threads)
        load_ended = time.monotonic()
        at_load_end = get_json(url + "/health")
        health: dict[str, Any] = {}
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            health = get_json(url + "/health")
            if health["spool_entries"] == 0 and health["stored_events"] >= health["accepted_events"]:
                break
            time.sleep(0.1)
        drained = time.monotonic()
        sampler.stop.set()
        cpu_s = cpu_seconds_with_children(process.pid) - cpu_before
        rss_mb, writer_rss_mb = peak_rss_with_children_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    load_s = wrk["duration_us"] / 1e6
    acknowledged_events = wrk["ok"] * events_per_request
    requests_per_s = wrk["ok"] / load_s
    return {
        "spool_sync": spool_sync,
        "log_level": log_level,
        "acknowledged_requests_per_s": requests_per_s,
        "acknowledged_events_per_s": acknowledged_events / load_s,
        "stored_events_per_s_end_to_end": health["stored_events"] / (drained - started),
        "drain_after_load_s": round(drained - load_ended, 2),
        # What was still spooled when the load stopped, in seconds of the run's intake: the
        # writer keeps up when this stays small however long the run.
        "backlog_at_load_end_entries": at_load_end["spool_entries"],
        "backlog_at_load_end_s": at_load_end["spool_entries"] / requests_per_s if requests_per_s else 0.0,
        # Server and writer process, from load start until drained.
        "cpu_us_per_request": cpu_s / wrk["ok"] * 1e6 if wrk["ok"] else 0.0,
        "p50_ms": wrk["p50_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000,
        "peak_rss_mb": round(rss_mb, 1),
        "peak_rss_writer_process_mb": round(writer_rss_mb, 1),
        "peak_rss_total_mb": round(rss_mb + writer_rss_mb, 1),
        "acknowledged_events_wrk": acknowledged_events,
        "acknowledged_events_server": health["accepted_events"],
        "stored_events": health["stored_events"],
        # wrk cannot count answers to requests still in flight when it stops; the server can.
        "stored_equals_acknowledged": health["stored_events"] == health["accepted_events"],
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


def server_runs(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The server's configurations, each beside a ceiling measured right before it."""
    for n, duration in ((100, args.sustained), (1, args.duration)):
        ceiling = bench_ceiling(n, args.duration, args)
        ours = bench_tlytics(n, duration, args)
        results[f"events_{n}"] = {
            "ceiling": ceiling,
            "tlytics": ours,
            "ratio_acknowledged_events": ours["acknowledged_events_per_s"] / ceiling["events_per_s"],
            "ratio_stored_events": ours["stored_events_per_s_end_to_end"] / ceiling["events_per_s"],
        }
        print(f"done: {n} events/request (ceiling and tlytics)", flush=True)
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


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(configuration, figure, ceiling in the same run, ratio, target) for every run made."""
    rows: list[tuple[str, str, str, str, str]] = []
    if "events_100" in results:
        run = results["events_100"]
        ours, ceiling = run["tlytics"], run["ceiling"]
        rows += [
            (
                f"100 ev/req, {ours['wrk']['duration_us'] / 1e6:.0f} s: acknowledged",
                f"{ours['acknowledged_events_per_s']:,.0f} ev/s",
                f"{ceiling['events_per_s']:,.0f} ev/s",
                f"{run['ratio_acknowledged_events']:.2f}",
                "",
            ),
            (
                "  stored end to end",
                f"{ours['stored_events_per_s_end_to_end']:,.0f} ev/s",
                "",
                f"{run['ratio_stored_events']:.2f}",
                ">= 0.32",
            ),
            (
                "  backlog at load end",
                f"{ours['backlog_at_load_end_s']:.1f} s of intake",
                "",
                "",
                "< 5 s",
            ),
            ("  p50 / p99", f"{ours['p50_ms']:.1f} / {ours['p99_ms']:.1f} ms", "", "", "p99 <= 50 ms"),
            ("  peak RSS server + writer", f"{ours['peak_rss_total_mb']:.0f} MB", "", "", "<= 300 MB"),
            ("  stored == acknowledged", str(ours["stored_equals_acknowledged"]), "", "", "True"),
            ("  CPU per request", f"{ours['cpu_us_per_request']:.0f} us", "", "", ""),
        ]
    if "events_1" in results:
        run = results["events_1"]
        ours, ceiling = run["tlytics"], run["ceiling"]
        rows += [
            (
                "1 ev/req: acknowledged",
                f"{ours['acknowledged_requests_per_s']:,.0f} req/s",
                f"{ceiling['requests_per_s']:,.0f} req/s",
                f"{run['ratio_acknowledged_events']:.2f}",
                ">= 0.6",
            ),
            ("  p99, CPU per request", f"{ours['p99_ms']:.1f} ms, {ours['cpu_us_per_request']:.0f} us", "", "", ""),
        ]
    if "events_1_log_off" in results:
        run = results["events_1_log_off"]
        ours = run["tlytics"]
        rows += [
            (
                "1 ev/req, log line off",
                f"{ours['acknowledged_requests_per_s']:,.0f} req/s, {ours['cpu_us_per_request']:.0f} us",
                "",
                f"on/off {run['ratio_log_on_to_off_requests']:.2f} req/s,"
                f" {run['ratio_log_on_to_off_cpu_per_request']:.2f} CPU",
                "req/s >= 0.9",
            )
        ]
    if "spool_sync_full" in results:
        run = results["spool_sync_full"]
        rows.append(
            (
                "100 ev/req, --spool-sync full",
                f"{run['tlytics']['acknowledged_events_per_s']:,.0f} ev/s",
                "",
                f"{run['ratio_to_normal_acknowledged']:.2f} x normal",
                ">= 0.7",
            )
        )
    for nodes in (1, 2):
        run = results.get(f"postgresql_{nodes}_nodes")
        if run is not None:
            rows.append(
                (
                    f"PostgreSQL, {nodes} node{'s' if nodes > 1 else ''}: stored",
                    f"{run['stored_events_per_s_end_to_end']:,.0f} ev/s",
                    "",
                    f"{run['ratio_to_sqlite_stored']:.2f} x SQLite",
                    ">= 0.5" if nodes == 1 else "",
                )
            )
    if "client" in results:
        client = results["client"]
        rows += [
            ("client emit() p50 / p99", f"{client['emit_p50_us']:.2f} / {client['emit_p99_us']:.2f} us", "", "", ""),
            (
                "client emits/s, delivery",
                f"{client['emits_per_s']:,.0f} / {client['delivery_events_per_s']:,.0f} ev/s",
                "",
                "",
                "",
            ),
        ]
    return rows


def format_table(rows: list[tuple[str, str, str, str, str]]) -> str:
    header = ("configuration", "figure", "ceiling, same run", "ratio", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=30, help="seconds per load run (default 30)")
    parser.add_argument("--sustained", type=int, default=60, help="seconds of the sustained 100-event run (default 60)")
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
    if shutil.which("wrk") is None and args.only != "client":
        sys.exit("wrk is not installed: apt-get install -y wrk")

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "options": {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()},
    }
    if args.only != "client":
        server_runs(args, results)
    if args.only != "server":
        results["client"] = bench_client(args)
    print(format_table(table_rows(results)), flush=True)
    out = args.output or RESULTS / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
