"""Python calls per request of the ingest process at 1 event per request, by component, beside
the parse-only ceiling's: where a request's work goes, deterministic (a count, not a time).

The server (this checkout's, `--old`'s) and `bench/ceiling.py` run under cProfile switched on
by SIGUSR1 and off (its figures written) by SIGUSR2, so start-up and warm-up are not counted;
a client of 32 keep-alive connections posts `--requests` 1-event bodies in between. Each
function's calls are summed by component (aiohttp, the asyncio loop in Python, Tlytics' own
modules, structlog, prometheus-client, C built-ins) and the top functions listed.

    python -m bench.request_calls [--old /tmp/old-checkout] [--requests 3200] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.ingest import ROOT, free_port, wait_healthy
from bench.request_instructions import _load

# Run in the profiled process: cProfile on SIGUSR1, off and written to $PROFILE_OUT on SIGUSR2.
_PROFILED = """
import cProfile, os, runpy, signal, sys
profile = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
def _stop(*_):
    profile.disable()
    profile.dump_stats(os.environ["PROFILE_OUT"])
signal.signal(signal.SIGUSR2, _stop)
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def profile(root: Path | None, requests: int, out: Path) -> int:
    """Profile the server at `root` (None: the ceiling) over `requests` posts; the posts answered."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tlytics-calls-") as workdir:
        if root is None:
            arguments = ["bench.ceiling", str(port)]
        else:
            arguments = ["tlytics", "--host", "127.0.0.1", "--port", str(port), "--db", f"{workdir}/b.db"]
            arguments += ["--spool", f"{workdir}/spool", "--flush", "1s"]
        code_root = root or ROOT
        env = {**os.environ, "PYTHONPATH": str(code_root), "PYTHONHASHSEED": "0", "PROFILE_OUT": str(out)}
        with Path(workdir, "server.log").open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-c", _PROFILED, *arguments],
                cwd=code_root,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process, timeout_s=60)
            asyncio.run(_load(port, 320, 32, 1))
            process.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            ok = asyncio.run(_load(port, requests, 32, 1))
            process.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    return ok


def _component(path: str, function: str) -> str:
    if path == "~":
        return "C built-ins"
    for marker, name in [
        ("/asyncio/", "asyncio loop (Python)"),
        ("selectors", "asyncio loop (Python)"),
        ("/aiohttp/", "aiohttp"),
        ("/multidict/", "aiohttp"),
        ("/yarl/", "aiohttp"),
        ("/aiosignal/", "aiohttp"),
        ("/structlog/", "structlog"),
        ("/prometheus_client/", "prometheus-client"),
        ("tlytics/logs.py", "tlytics: log line"),
        ("tlytics/ingest/request_line.py", "tlytics: log line"),
        ("tlytics/spool/", "tlytics: spool, group commit"),
        ("tlytics/ingest/fastpath.py", "tlytics: fast path, ids"),
        ("tlytics/ids.py", "tlytics: fast path, ids"),
        ("tlytics/", "tlytics: middleware, access, handler"),
    ]:
        if marker in path:
            return name
    return "other (stdlib)"


def report(label: str, out: Path, answered: int, top: int) -> Counter[str]:
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    by_component: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for (path, line, function), (_, calls, *_rest) in stats.items():
        by_component[_component(path, function)] += calls
        by_function[f"{path.split('site-packages/')[-1].split(str(ROOT) + '/')[-1]}:{line} {function}"] += calls
    total = sum(by_component.values())
    print(f"{label}: {total / answered:.1f} Python calls per request")
    for component, calls in by_component.most_common():
        print(f"  {calls / answered:7.1f}  {component}")
    for function, calls in by_function.most_common(top):
        print(f"    {calls / answered:6.2f}  {function}")
    return by_component


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, help="another checkout to profile as well")
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument("--top", type=int, default=25, help="functions listed per server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlytics-calls-") as workdir:
        for label, root in [("new", ROOT), ("old", args.old), ("ceiling", None)]:
            if label == "old" and root is None:
                continue
            out = Path(workdir, f"{label}.prof")
            answered = profile(root, args.requests, out)
            report(label, out, answered, args.top)


if __name__ == "__main__":
    main()
