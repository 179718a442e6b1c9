"""Issue 21 at scale, for `bench.view`: a store filled once and reused between runs (10M
events take minutes to make), copies of it to declare properties on, the declared backfill
timed inside a running server that is being queried, and the distinct counts of a
`--unique-property` from its sketches against its declared values.

A store at `--store-file PATH` is filled when missing (the store class directly, 200,000
events a transaction) and its fill figures kept beside it in `PATH.fill.json`; the runs that
declare properties work on copies (`PATH.declared.db`, `PATH.server.db`), so the plain store
stays plain. Keep these files out of git (bench/results/ or /tmp).
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw

READ_TIMEOUT = "600s"  # the undeclared questions take seconds on 10M events: not refused


def reused_store(
    path: Path, events: int, step_us: int, fill: Callable[..., float], raw_bytes: list[int]
) -> tuple[float, bool]:
    """(the fill's seconds, whether it was reused) of the store at `path`: filled now unless a
    store of these `events` and `step_us` is there already; `raw_bytes[0]` gets its raw field
    bytes either way."""
    figures = path.with_name(path.name + ".fill.json")
    if path.exists() and figures.exists():
        kept = json.loads(figures.read_text())
        if kept["events"] == events and kept["step_us"] == step_us:
            raw_bytes[0] += kept["raw_bytes"]
            return float(kept["fill_s"]), True
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    counted = [0]
    fill_s = fill(path, events, batch=200_000, step_us=step_us, raw_bytes=counted)
    raw_bytes[0] += counted[0]
    figures.write_text(json.dumps({"events": events, "step_us": step_us, "fill_s": fill_s, "raw_bytes": counted[0]}))
    return fill_s, False


def copy_of(source: Path, name: str) -> Path:
    """A fresh copy of the closed store `source` (its WAL checkpointed at close) beside it."""
    target = source.with_name(f"{source.name}.{name}.db")
    for stale in (target, target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        stale.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    return target


def pending_backfills(db_path: Path, paths: Sequence[str]) -> int:
    """How many of `paths` the store does not list as declared and complete yet (read-only;
    a server's writer declares them some time after it starts)."""
    connection = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        connection.set_busy_timeout(10_000)
        complete = {row[0] for row in connection.execute("SELECT path FROM declared_properties WHERE complete")}
        return len(set(paths) - complete)
    finally:
        connection.close()


def sketches_ready(db_path: Path, path: str) -> bool:
    connection = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        connection.set_busy_timeout(10_000)
        return connection.execute("SELECT 1 FROM sketched_properties WHERE path = ?", (path,)).get is not None
    finally:
        connection.close()


def progress(figures: dict[str, object]) -> None:
    """The figures so far, on stderr: a long run shows what it has before it ends."""
    print(json.dumps(figures), file=sys.stderr, flush=True)


def started_server(server_args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """The real server on a free port with `server_args`, healthy; and its URL."""
    from bench.ingest import ROOT, free_port, server_command, wait_healthy

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = server_command(port, *server_args, "--log-level", "warning", "--read-timeout", READ_TIMEOUT)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy(url, process, timeout_s=600)
    return process, url


def stopped(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(120)


def backfill_in_queried_server(
    db_path: Path,
    properties: Sequence[str],
    questions: Sequence[str],
    limit_s: float = 4 * 3600.0,
) -> dict[str, Any]:
    """Start the server with `properties` declared on the plain store `db_path` and ask it
    `questions` one after another, without pause, until the backfill is complete: its time from
    the server's start, and the questions answered meanwhile."""
    flags = [flag for text in properties for flag in ("--property", text)]
    started = time.perf_counter()
    process, url = started_server(["--db", str(db_path), *flags])
    healthy_s = time.perf_counter() - started
    # The writer opens the store (and starts the backfill) when it first has events to write.
    wake = {"events": [{"id": str(uuid.uuid4()), "key": "bench_wake", "timestamp": "2030-01-01T00:00:00Z"}]}
    request = urllib.request.Request(url + "/batch", data=json.dumps(wake).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    answered: list[float] = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            for question in questions:
                if done.is_set():
                    return
                asked = time.perf_counter()
                with urllib.request.urlopen(url + question, timeout=900) as response:
                    response.read()
                answered.append(time.perf_counter() - asked)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        deadline = time.monotonic() + limit_s
        paths = [text.removeprefix("data.") for text in properties]
        while pending_backfills(db_path, paths) and time.monotonic() < deadline:
            time.sleep(0.5)
        backfill_s = time.perf_counter() - started
        complete = pending_backfills(db_path, paths) == 0
    finally:
        done.set()
        stopped(process)
        asker.join(900)
    return {
        "server_backfill_s": round(backfill_s, 1),
        "server_backfill_complete": complete,
        "server_healthy_after_s": round(healthy_s, 1),
        "questions_answered_during_backfill": len(answered),
        "question_p50_ms_during_backfill": round(sorted(answered)[len(answered) // 2] * 1000, 1) if answered else None,
    }


def unique_choice(db_path: Path, ranges: dict[str, str]) -> dict[str, Any]:
    """On the declared store, sketch data.user_id as `--unique-property` does (the sketch
    backfill timed through the store class), then time the store's daily distinct counts over
    each range both ways, same store, same run: from the sketches, and exactly from the
    declared values (the bound that chooses between them moved out of the way)."""
    import tlytics.store.sqlite.sketches as sketches
    from tlytics.store import SQLiteStore
    from tlytics.store.base import EventFilter

    started = time.perf_counter()
    SQLiteStore(db_path, unique_properties=["user_id"]).close()
    figures: dict[str, Any] = {"sketch_backfill_s": round(time.perf_counter() - started, 1)}
    store = SQLiteStore(db_path)
    bound = getattr(sketches, "EXACT_UNIQUE_MAX_EVENTS")  # noqa: B009  # set back when done
    try:
        for name, (since_us, until_us) in _ranges_us(ranges).items():
            starts = list(range(since_us, until_us, 86_400_000_000))
            where = EventFilter(since_us=since_us, until_us=until_us)
            for method, events_bound in (("sketched", -1), ("exact_declared", 1 << 62)):
                setattr(sketches, "EXACT_UNIQUE_MAX_EVENTS", events_bound)  # noqa: B010  # the bench's own bound
                samples = []
                for _ in range(3):
                    asked = time.perf_counter()
                    answer = store.unique_counts(starts, until_us, where, "user_id")
                    samples.append((time.perf_counter() - asked) * 1000)
                assert answer.method == ("hll" if method == "sketched" else "exact")
                figures[f"unique_{name}_{method}_ms"] = round(sorted(samples)[1], 1)
                figures[f"unique_{name}_{method}_total"] = answer.total
    finally:
        setattr(sketches, "EXACT_UNIQUE_MAX_EVENTS", bound)  # noqa: B010
        store.close()
    return figures


def _ranges_us(ranges: dict[str, str]) -> dict[str, tuple[int, int]]:
    from tlytics.timefmt import parse_rfc3339_us

    found = {}
    for name, query in ranges.items():
        parts = dict(part.split("=", 1) for part in query.split("&"))
        found[name] = (parse_rfc3339_us(parts["since"]), parse_rfc3339_us(parts["until"]))
    return found


def side_by_side(
    plain: Path, declared: Path, properties: Sequence[str], questions: dict[str, str], repeats: int
) -> dict[str, Any]:
    """Two servers on the same events, one with `properties` declared (its store filled with
    them), asked each question in turn, one after the other: the p50 of each and their ratio,
    measured under the same load (a shared machine's load moves between runs)."""
    flags = [flag for text in properties for flag in ("--property", text)]
    undeclared, undeclared_url = started_server(["--db", str(plain)])
    try:
        with_values, declared_url = started_server(["--db", str(declared), *flags])
        try:
            figures: dict[str, Any] = {}
            for name, question in questions.items():
                samples: dict[str, list[float]] = {"undeclared": [], "declared": []}
                for _ in range(repeats):
                    for side, url in (("undeclared", undeclared_url), ("declared", declared_url)):
                        asked = time.perf_counter()
                        with urllib.request.urlopen(url + question, timeout=900) as response:
                            response.read()
                        samples[side].append((time.perf_counter() - asked) * 1000)
                p50 = {side: statistics.median(times) for side, times in samples.items()}
                figures[name] = {
                    "undeclared_p50_ms": round(p50["undeclared"], 1),
                    "declared_p50_ms": round(p50["declared"], 1),
                    "declared_to_undeclared": round(p50["declared"] / p50["undeclared"], 3),
                }
                progress({name: figures[name]})
            return figures
        finally:
            stopped(with_values)
    finally:
        stopped(undeclared)
