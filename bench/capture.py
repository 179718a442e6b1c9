"""Ingest cost of the other SDKs' routes against /batch, in the same run on the same server:
events acknowledged per second for Tlytics' `/batch`, Segment's `/v1/batch` and PostHog's
`/batch/`, each sent the same events (same count, same properties, fresh ids) in the same
number of requests, the routes taking turns round by round; the best round of each counts.

    python -m bench.capture                # about a minute
    python -m bench.capture --rounds 1 --requests 50   # a quick look
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.ingest import free_port, server_command, wait_healthy
from tlytics.ids import uuid7_int
from tlytics.timefmt import format_rfc3339_us


def _properties(n: int) -> dict[str, Any]:
    return {"path": f"/products/{n % 500}", "plan": "pro" if n % 3 else "free", "price": n % 100, "ok": True}


def _uuid7() -> str:
    return str(uuid.UUID(int=uuid7_int()))


def tlytics_body(events: int, first: int) -> bytes:
    now = format_rfc3339_us(time.time_ns() // 1000)
    batch = [
        {"id": _uuid7(), "key": "page_view", "timestamp": now, "data": {"user_id": f"u{n}", **_properties(n)}}
        for n in range(first, first + events)
    ]
    return orjson.dumps({"events": batch})


def segment_body(events: int, first: int) -> bytes:
    now = format_rfc3339_us(time.time_ns() // 1000)
    batch = [
        {
            "type": "track",
            "event": "page_view",
            "messageId": _uuid7(),
            "userId": f"u{n}",
            "timestamp": now,
            "properties": _properties(n),
        }
        for n in range(first, first + events)
    ]
    return orjson.dumps({"batch": batch, "sentAt": now})


def posthog_body(events: int, first: int) -> bytes:
    now = format_rfc3339_us(time.time_ns() // 1000)
    batch = [
        {"event": "page_view", "uuid": _uuid7(), "distinct_id": f"u{n}", "timestamp": now, "properties": _properties(n)}
        for n in range(first, first + events)
    ]
    return orjson.dumps({"api_key": "unused", "batch": batch, "sent_at": now})


ROUTES: dict[str, tuple[str, Callable[[int, int], bytes]]] = {
    "/batch": ("/batch", tlytics_body),
    "/v1/batch (Segment)": ("/v1/batch", segment_body),
    "/batch/ (PostHog)": ("/batch/", posthog_body),
}


def send_all(port: int, path: str, bodies: list[bytes], threads: int) -> float:
    """Post every body (keep-alive connections, `threads` at once); the seconds it took."""
    chunks = [bodies[index::threads] for index in range(threads)]
    failures: list[str] = []

    def post(chunk: list[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in chunk:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                failures.append(f"{path}: {response.status} {answer[:200]!r}")
                return
        connection.close()

    workers = [threading.Thread(target=post, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(failures[0])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="requests per route per round")
    parser.add_argument("--events", type=int, default=100, help="events per request")
    parser.add_argument("--threads", type=int, default=2, help="connections at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlytics-bench-capture-") as directory:
        port = free_port()
        command = server_command(
            port, "--db", str(Path(directory) / "bench.db"), "--flush", "1s", "--log-level", "warning"
        )
        with open(Path(directory) / "server.log", "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
            try:
                wait_healthy(f"http://127.0.0.1:{port}", process)
                best: dict[str, float] = {}
                next_event = 0
                for _ in range(args.rounds):
                    for name, (path, make_body) in ROUTES.items():
                        bodies = []
                        for _ in range(args.requests):
                            bodies.append(make_body(args.events, next_event))
                            next_event += args.events
                        rate = args.requests * args.events / send_all(port, path, bodies, args.threads)
                        best[name] = max(best.get(name, 0.0), rate)
            finally:
                process.terminate()
                process.wait(timeout=60)
    baseline = best["/batch"]
    print(
        f"{args.requests} requests x {args.events} events per route per round, {args.threads} connections, "
        f"best of {args.rounds} rounds"
    )
    for name, rate in best.items():
        print(f"{name:22} {rate:>10,.0f} events/s   {rate / baseline:.2f}x /batch")


if __name__ == "__main__":
    main()
