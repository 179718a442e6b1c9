"""A client application run as a separate process by the client tests (python -m
tests.client_worker MODE ...). It prints `<monotonic time> <id>` after each emit() returns,
so the test knows exactly what the application believes it emitted, and when."""

from __future__ import annotations

import argparse
import os
import sys
import time

from tlytics import Client, Config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["emit-and-exit", "emit-forever", "emit-then-flush"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--spool-interval", type=float, default=0.05)
    parser.add_argument("--flush-period", type=float, default=0.2)
    args = parser.parse_args()
    client = Client(
        Config(
            server_url=args.server,
            spool_dir=args.spool,
            spool_interval=args.spool_interval,
            flush_period=args.flush_period,
            timeout=2.0,
            retry_max_delay=1.0,
        )
    )
    out = sys.stdout
    emitted = 0
    deadline = time.monotonic() + 60  # bounded even if nobody kills us
    while (args.mode == "emit-forever" or emitted < args.count) and time.monotonic() < deadline:
        event_id = client.emit("worker_event", {"pid": os.getpid(), "n": emitted})
        out.write(f"{time.monotonic():.6f} {event_id}\n")
        out.flush()
        emitted += 1
        if args.mode == "emit-forever":
            time.sleep(0.0005)
    if args.mode == "emit-then-flush":
        client.close(timeout=20)
    # emit-and-exit: a normal exit without close(); atexit must persist the memory buffer.


if __name__ == "__main__":
    main()
