"""The event loop's longest stall under hostile bodies: a real `tlytics` server, a probe asking
`/health` every few milliseconds, and a few clients posting the bodies that froze the loop
(issue 19, items 1 and 2) at once. Prints the probe's latency (p50, p99, max): how long the
loop could not answer while the hostile bodies were being refused.

    python -m bench.loop_stall                       # this checkout
    python -m bench.loop_stall --source /tmp/main    # the same load against another checkout
    python -m bench.loop_stall --duration 5 --senders 3

Run it against both checkouts in the same minute to compare: the machine's load changes the
absolute figures, the ratio is what to quote.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def many_gzip_members(members: int = 100_000) -> bytes:
    """Item 1: a valid JSON body followed by many empty gzip members (~2 MiB for 100k)."""
    return gzip.compress(b"[]") + gzip.compress(b"") * members


def tiny_objects_bomb(inflated_bytes: int = 10 * 1024 * 1024) -> bytes:
    """Item 2: ~10 KB of gzip that inflates to `inflated_bytes` of `{}`, one event's data."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head, tail = b'[{"key":"k","data":{"a":[', b"{}]}}]"
    count = max(0, (inflated_bytes - len(head) - len(tail)) // 3)
    parts = [compressor.compress(head)]
    block = b"{}," * 65_536
    for _ in range(count // 65_536):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(b"{}," * (count % 65_536) + tail))
    parts.append(compressor.flush())
    return b"".join(parts)


HOSTILE_BODIES = {"gzip_members": many_gzip_members, "tiny_objects": tiny_objects_bomb}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(source: Path, directory: Path, port: int) -> subprocess.Popen[bytes]:
    """A real server from the checkout at `source` (its code, this interpreter)."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, "-m", "tlytics", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--db", str(directory / "bench.db"), "--log-level", "error"]
    process = subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if health_latency_s(port, timeout_s=1.0) is not None:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start within 60 s")


def health_latency_s(port: int, *, timeout_s: float) -> float | None:
    """Seconds for one GET /health on a new connection (None: not a 200)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        return time.perf_counter() - started if response.status == 200 else None
    finally:
        connection.close()


def post(port: int, body: bytes, *, timeout_s: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        connection.request("POST", "/events", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def measure(port: int, *, duration_s: float, senders: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """Probe /health while `senders` threads post hostile bodies for `duration_s`; then wait
    for the posts in flight (at most `timeout_s`) so a frozen loop counts in full."""
    bodies = [factory() for factory in HOSTILE_BODIES.values()]
    stop = threading.Event()
    statuses: list[int] = []
    latencies: list[float] = []

    def send(index: int) -> None:
        for round_ in range(10_000):
            if stop.is_set():
                return
            try:
                statuses.append(post(port, bodies[(index + round_) % len(bodies)], timeout_s=timeout_s))
            except OSError:
                statuses.append(0)

    threads = [threading.Thread(target=send, args=(index,), daemon=True) for index in range(senders)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # the hostile bodies are on their way
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline or (not latencies and time.monotonic() < deadline + timeout_s):
        latency = health_latency_s(port, timeout_s=timeout_s)
        latencies.append(latency if latency is not None else float("inf"))
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join(timeout_s)
    return latency_summary(latencies, statuses)


def latency_summary(latencies: list[float], statuses: list[int]) -> dict[str, Any]:
    """The probes' latencies (seconds) as p50/p99/max in ms, and what the hostile posts got."""
    latencies = sorted(latencies)
    return {
        "probes": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": 1000 * latencies[-1],
        "hostile_posts": len(statuses),
        "statuses": sorted(set(statuses)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose server to run")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of probing")
    parser.add_argument("--senders", type=int, default=3, help="hostile clients at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        server = start_server(args.source.resolve(), Path(directory), port)
        try:
            figures = measure(port, duration_s=args.duration, senders=args.senders)
        finally:
            server.terminate()
            server.wait(60)
    print(f"source: {args.source}")
    for name, value in figures.items():
        print(f"  {name}: {value:.1f}" if isinstance(value, float) else f"  {name}: {value}")


if __name__ == "__main__":
    main()
