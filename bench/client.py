"""Client benchmark: the Tlytics client library against a real `tlytics` server on 127.0.0.1.

    python -m bench.client                    # = make bench-client (about a minute)
    python -m bench.client --events 50000     # a quick look

Prints, each with the ratio to a baseline measured in the same run:
- delivery: events from the first emit() until flush() returned True (every event
  acknowledged by the server, checked against its own count), per second; target ≥ 100k/s.
  Baseline: the same events posted by one http.client connection in pre-encoded 1,000-event
  bodies (what the server takes from a single sender that does nothing else).
- emit() rate with the sender running (a backlog being delivered meanwhile); target ≥ 200k/s.
- emit() latency, every call timed, with the sender running: p50, p99 (target ≤ 50 µs), max.
  Baseline for both: the least an emit must do (a UUID, the clock, a copy of the data, an
  append to a deque).

Writes bench/results/client-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.ingest import free_port, get_json, server_command, wait_healthy
from tlytics import Client, Config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("results")
DATA = {"user_id": "123", "source": "web", "plan": "pro"}


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        server_command(port, "--db", str(workdir / "b.db"), "--flush", "1s", "--log-level", "warning"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_healthy(url, process)
    return process, url


def accepted(url: str) -> int:
    return int(get_json(url + "/health")["accepted_events"])


def bench_delivery(url: str, workdir: Path, n: int) -> dict[str, Any]:
    before = accepted(url)
    client = Client(Config(server_url=url, spool_dir=workdir / "delivery-spool", flush_period=1.0))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for _ in range(n):
        client.emit("bench_emit", DATA)
    delivered = client.flush(600)
    seconds = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0  # every thread of this process: emit, spooler, sender
    client.close(5)
    acknowledged = accepted(url) - before
    return {
        "delivered_all": delivered,
        "acknowledged": acknowledged,
        "seconds": seconds,
        "events_per_s": n / seconds,
        # What a busy machine does not change much: the client's own CPU per event.
        "client_cpu_us_per_event": cpu_s / n * 1e6,
    }


def bench_raw_post(url: str, n: int, batch: int = 1000) -> dict[str, Any]:
    """The baseline: pre-encoded bodies on one keep-alive connection, no spool, no client."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    bodies = []
    for start in range(0, n, batch):
        events = [{"id": str(uuid.uuid4()), "key": "bench_raw", "data": DATA} for _ in range(min(batch, n - start))]
        bodies.append(orjson.dumps({"events": events}))
    t0 = time.perf_counter()
    for body in bodies:
        connection.request("POST", "/batch", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"raw post answered {response.status}")
    seconds = time.perf_counter() - t0
    connection.close()
    return {"seconds": seconds, "events_per_s": n / seconds}


def bench_emit(url: str, workdir: Path, n: int) -> dict[str, Any]:
    """emit() rate and latency while the sender delivers a backlog of n events."""
    client = Client(Config(server_url=url, spool_dir=workdir / "emit-spool", flush_period=0.2))
    for _ in range(n):  # the backlog the sender works on while we measure
        client.emit("bench_backlog", DATA)
    client._buffer.persist()  # on disk now, so the sender is busy from the start
    emit = client.emit
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    for _ in range(n):
        emit("bench_emit", DATA)
    rate_s = time.perf_counter() - t0
    emit_cpu_s = time.thread_time() - cpu0
    latencies = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        emit("bench_emit", DATA)
        latencies.append(clock() - start)
    sender_busy = client.stats.requests > 0
    delivered = client.flush(600)
    client.close(5)
    latencies.sort()
    return {
        "emits_per_s": n / rate_s,
        # Per CPU second of the emitting thread: what the rate would be with a core of its own.
        "emits_per_cpu_s": n / emit_cpu_s,
        "p50_us": latencies[n // 2] / 1000,
        "p99_us": latencies[int(n * 0.99)] / 1000,
        "max_us": latencies[-1] / 1000,
        "sender_was_sending": sender_busy,
        "delivered_all": delivered,
    }


def bench_emit_floor(n: int) -> dict[str, Any]:
    """The least an emit must do, timed the same way."""
    buffer: collections.deque[tuple[str, str, int, dict[str, Any]]] = collections.deque()

    def floor(key: str, data: dict[str, Any]) -> str:
        event_id = str(uuid.uuid4())
        buffer.append((event_id, key, time.time_ns(), dict(data)))
        return event_id

    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    for _ in range(n):
        floor("bench_emit", DATA)
    rate_s = time.perf_counter() - t0
    cpu_s = time.thread_time() - cpu0
    latencies = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        floor("bench_emit", DATA)
        latencies.append(clock() - start)
    latencies.sort()
    return {"emits_per_s": n / rate_s, "emits_per_cpu_s": n / cpu_s, "p99_us": latencies[int(n * 0.99)] / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events per measurement (default 200,000)")
    args = parser.parse_args()
    n = args.events
    # Figures from a shared machine mean little without it: the baselines move with it too.
    load_at_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="tlytics-bench-client-"))
    process, url = start_server(workdir)
    try:
        raw = bench_raw_post(url, n)
        delivery = bench_delivery(url, workdir, n)
        emit = bench_emit(url, workdir, n)
        floor = bench_emit_floor(n)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "events": n,
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
        },
        "delivery": delivery,
        "raw_post_baseline": raw,
        "emit": emit,
        "emit_floor_baseline": floor,
    }
    print(
        f"delivery  {delivery['events_per_s']:>10,.0f} ev/s acknowledged (target ≥ 100,000)"
        f"  all delivered {delivery['delivered_all']}, server acknowledged {delivery['acknowledged']:,} of {n:,}"
        f"  | raw http.client post {raw['events_per_s']:,.0f} ev/s, ratio {delivery['events_per_s'] / raw['events_per_s']:.2f}"
    )
    print(
        f"          client CPU {delivery['client_cpu_us_per_event']:.2f} µs per delivered event"
        f" (emit, spooler and sender threads together: {1e6 / delivery['client_cpu_us_per_event']:,.0f} ev/s per core)"
    )
    print(
        f"emit rate {emit['emits_per_s']:>10,.0f} emits/s with the sender running (target ≥ 200,000)"
        f"  | floor {floor['emits_per_s']:,.0f}/s, ratio {emit['emits_per_s'] / floor['emits_per_s']:.2f}"
    )
    print(
        f"          {emit['emits_per_cpu_s']:>10,.0f} emits per CPU second of the emitting thread"
        f"  | floor {floor['emits_per_cpu_s']:,.0f}, ratio {emit['emits_per_cpu_s'] / floor['emits_per_cpu_s']:.2f}"
    )
    print(
        f"emit      p50 {emit['p50_us']:.2f} µs  p99 {emit['p99_us']:.2f} µs (target ≤ 50)  max {emit['max_us']:.0f} µs"
        f"  | floor p99 {floor['p99_us']:.2f} µs"
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"client-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"load average at start {load_at_start:.2f} on {os.cpu_count()} CPUs; written to {path}")


if __name__ == "__main__":
    main()
