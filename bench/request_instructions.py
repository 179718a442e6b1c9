"""Instructions per request of the ingest process, counted by callgrind: deterministic where
CPU time on a shared 2-core machine is not. The server (this checkout's and `--old`'s) runs
under `valgrind --tool=callgrind` with instrumentation off (its writer process, spawned, is not
counted); a client of 32 keep-alive connections posts a few bodies to warm it up, then
instrumentation is switched on (`callgrind_control -i on`) for `--requests` posts and off
again: the instructions counted over the requests answered.

    python -m bench.request_instructions [--old /tmp/old-checkout] [--requests 2000]

Needs valgrind. A minute or two per server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.ingest import ROOT, free_port, server_command, wait_healthy

_BODY = b'[{"key":"page_view","data":{"user_id":"u1","path":"/products/1","referrer":"https://example.com/","n":1}}]'


def _request(port: int, events: int) -> bytes:
    body = b"[" + b",".join([_BODY[1:-1]] * events) + b"]"
    head = (
        f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port: int, request: bytes, count: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ok = 0
    for _ in range(count):
        writer.write(request)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        ok += status_line.split()[1] == b"200"
    writer.close()
    return ok


async def _load(port: int, requests: int, connections: int, events: int) -> int:
    request = _request(port, events)
    counts = [requests // connections] * connections
    return sum(await asyncio.gather(*(_connection(port, request, count) for count in counts)))


def _instrument(pid: int, on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(pid)], check=True, capture_output=True)


def instructions(
    root: Path | None, requests: int, *, connections: int, events: int, log_level: str, keep: Path | None = None
) -> int:
    """Instructions the ingest process at `root` (None: the ceiling, bench/ceiling.py) ran
    while serving `requests` (after a warm-up)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tlytics-instructions-") as workdir:
        out = Path(workdir, "callgrind.out")
        server = (
            [sys.executable, "-m", "bench.ceiling", str(port)]
            if root is None
            else server_command(
                port,
                "--db",
                f"{workdir}/b.db",
                "--spool",
                f"{workdir}/spool",
                "--flush",
                "1s",
                "--log-level",
                log_level,
            )
        )
        command = [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=no",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            *server,
        ]
        root_dir = root or ROOT
        env = {**os.environ, "PYTHONPATH": str(root_dir), "PYTHONHASHSEED": "0"}
        with Path(workdir, "server.log").open("wb") as log_file:
            process = subprocess.Popen(command, cwd=root_dir, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process, timeout_s=300)
            asyncio.run(_load(port, connections * 10, connections, events))
            _instrument(process.pid, True)
            ok = asyncio.run(_load(port, requests, connections, events))
            _instrument(process.pid, False)
            if ok != requests // connections * connections:
                raise RuntimeError(f"only {ok} of {requests} requests acknowledged")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(300)
        if keep is not None:  # for callgrind_annotate
            shutil.copy(out, keep / f"callgrind-{'ceiling' if root is None else root.name}.out")
        # With instrumentation switched on and off, `totals` holds what was counted.
        match = re.search(rb"^totals: (\d+)", out.read_bytes(), re.MULTILINE)
        if match is None:
            raise RuntimeError("no totals in callgrind's output")
        return int(match.group(1)) // ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, help="another checkout to count as well")
    parser.add_argument("--ceiling", action="store_true", help="count the ceiling (bench/ceiling.py) as well")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--events", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--keep", type=Path, help="a directory to keep callgrind's output files in")
    args = parser.parse_args()
    options = {"connections": args.connections, "events": args.events, "log_level": args.log_level, "keep": args.keep}
    new = instructions(ROOT, args.requests, **options)
    print(f"new: {new:,} instructions per request ({args.events} events/request)", flush=True)
    if args.old is not None:
        old = instructions(args.old, args.requests, **options)
        print(f"old: {old:,} instructions per request; new ÷ old {new / old:.3f}", flush=True)
    if args.ceiling:
        ceiling = instructions(None, args.requests, **options)
        print(f"ceiling: {ceiling:,} instructions per request; new ÷ ceiling {new / ceiling:.2f}", flush=True)


if __name__ == "__main__":
    main()
