"""Instructions per call of the ingest fast path (`fast_spool_entry`) on a 100-event body,
counted by valgrind's callgrind: deterministic where CPU time on a shared machine is not.
Each checkout's fast path runs in a process of its own under callgrind, once with FEW calls and
once with MANY (after the same warm-up); (instructions of MANY - those of FEW) ÷ the calls
between them leaves out start-up and imports.

    python -m bench.fastpath_instructions                          # this checkout
    python -m bench.fastpath_instructions --old /tmp/old-checkout  # and another, same bodies

Bodies: `bench` (bench.request_instructions' events: key and data), `client` (what the client
library sends: id, key, timestamp, data), `batch` (the client's /batch shape), `pretty` (the
bench body pretty-printed), `reordered` (the bench body with `data` before `key`). Under a minute per checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = 100
FEW, MANY = 20, 220

_CALLS = """
import json, sys
from tlytics.ingest.fastpath import fast_spool_entry
body = {body!r}
for _ in range(5 + {calls}):
    accepted = fast_spool_entry(body, batch={batch}, now_us=1_756_116_000_000_000, max_events=10_000, max_event_bytes=1 << 20)
    assert accepted is not None and accepted[1] == {events}, "the fast path did not take the body"
"""

_EVENT = b'{"key":"page_view","data":{"user_id":"u1","path":"/products/1","referrer":"https://example.com/","n":1}}'
# As the client library sends it: every event its own id and timestamp (format_rfc3339_us).
_CLIENT_EVENT = (
    '{{"id":"0190f7c4-1234-7abc-8def-{index:012x}","key":"page_view","timestamp":"2025-08-25T12:00:{second:02d}.{micros}Z",'
    '"data":{{"user_id":"u1","path":"/products/1","referrer":"https://example.com/","n":1,"f":2.5}}}}'
)


def bodies() -> dict[str, tuple[bytes, bool]]:
    """name: (body, whether it is a /batch body)."""
    bench = b"[" + b",".join([_EVENT] * EVENTS) + b"]"
    client_events = [
        _CLIENT_EVENT.format(index=index, second=index // 10, micros=str(123457 + 7919 * index).rstrip("0")).encode()
        for index in range(EVENTS)
    ]
    client = b"[" + b",".join(client_events) + b"]"
    pretty = b"[\n" + b",\n".join([_EVENT.replace(b":", b": ").replace(b",", b", ")] * EVENTS) + b"\n]"
    return {
        "bench": (bench, False),
        "client": (client, False),
        "batch": (b'{"events":' + client + b"}", True),
        "pretty": (pretty, False),
        # Fields in another order: not the one-decode shape, so the two-decode path after it.
        "reordered": (
            bench.replace(b'"key":"page_view","data":', b'"data":').replace(b"}}", b'},"key":"page_view"}'),
            False,
        ),
    }


def _count(root: Path, body: bytes, batch: bool, calls: int) -> int:
    with tempfile.TemporaryDirectory(prefix="tlytics-fastpath-") as workdir:
        out = Path(workdir, "callgrind.out")
        code = _CALLS.format(body=body, batch=batch, calls=calls, events=EVENTS)
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", code]
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"}
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
        match = re.search(rb"^totals: (\d+)", out.read_bytes(), re.MULTILINE)
        if match is None:
            raise RuntimeError("no totals in callgrind's output")
        return int(match.group(1))


def per_call(root: Path, body: bytes, batch: bool) -> int:
    """Instructions of one fast_spool_entry call on `body` with the code at `root`."""
    return (_count(root, body, batch, MANY) - _count(root, body, batch, FEW)) // (MANY - FEW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, help="another checkout to count as well")
    parser.add_argument("--body", action="append", help="only these bodies (default: all)")
    args = parser.parse_args()
    for name, (body, batch) in bodies().items():
        if args.body and name not in args.body:
            continue
        new = per_call(ROOT, body, batch)
        line = f"{name}: new {new:,} instructions per {EVENTS}-event body"
        if args.old is not None:
            old = per_call(args.old, body, batch)
            line += f"; old {old:,}; new ÷ old {new / old:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
