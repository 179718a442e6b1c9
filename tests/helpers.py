"""What the tests share besides fixtures: real servers in subprocesses, HTTP calls, a stream
of events that records what was acknowledged, the exactly-once check, and a bounded poller.
Test modules import from here (never from one another)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from tlytics.client import Config
from tlytics.ingest.state import SPOOL, STORE, WRITE_SCHEDULER

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None], *, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy and return that; fail after `timeout_s`.

    Generous by default: a busy machine is slow, and a test that waits for something that is
    going to happen only costs time when it fails.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s}s: {what or check}")
        time.sleep(interval_s)


async def eventually_async(
    check: Callable[[], Awaitable[T | None]], *, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = ""
) -> T:
    """`eventually` for async tests: awaits `check` and sleeps with asyncio, so that the app on
    the test's own event loop (its writer, its handlers) keeps running while the test waits."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s}s: {what or check}")
        await asyncio.sleep(interval_s)


def event(n: int, key: str = "page_view", **data: Any) -> dict[str, Any]:
    """An event with a deterministic id and timestamp (n seconds into 2025), for read tests."""
    return {
        "id": str(uuid.UUID(int=n + 1)),
        "key": key,
        "timestamp": f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z",
        "data": data,
    }


async def app_flush(app: web.Application) -> None:
    """Drain the spool into the store now."""
    assert await app[WRITE_SCHEDULER].flush(timeout_s=30.0)


async def make_client(
    aiohttp_client: Any, make_app: Callable[..., web.Application], **overrides: Any
) -> tuple[Any, web.Application]:
    """A test client on the test app with `overrides` to its settings, and that app."""
    app = make_app(**overrides)
    return await aiohttp_client(app), app


def spool_count(app: web.Application) -> int:
    return app[SPOOL].count()


def store_count(app: web.Application) -> int:
    return app[STORE].count()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(
    method: str, url: str, body: Any = None, timeout_s: float = 10.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A blocking HTTP call for subprocess tests; returns (status, decoded JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextmanager
def held_write_lock(db_path: Path) -> Iterator[None]:
    """Hold the store's write lock from this process meanwhile, as a backup tool or a sqlite3
    shell in another process can; the server's busy timeout runs out before it is released."""
    connection = sqlite3.connect(db_path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def fast_config(server_url: str, spool: Path, **overrides: Any) -> Config:
    """A client Config for tests: short periods and timeouts, so waits stay short."""
    options: dict[str, Any] = {
        "server_url": server_url,
        "spool_dir": spool,
        "flush_period": 0.1,
        "spool_interval": 0.02,
        "timeout": 2.0,
        "retry_max_delay": 0.5,
    }
    options.update(overrides)
    return Config(**options)


# Stand-ins for the development-only packages a server's libraries import without needing them
# (see tests/server_path/__init__.py): first on a test server's path, they save CPU per start.
SERVER_PATH = Path(__file__).parent / "server_path"


def server_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test server's process: this one's and `extra`, with SERVER_PATH
    first on PYTHONPATH (the writer process and the resource tracker inherit it)."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SERVER_PATH), env.get("PYTHONPATH")]))
    return env


def server_argv(port: int, *flags: str) -> list[str]:
    """The command line of a real `tlytics` server on 127.0.0.1:`port` (0: any) with `flags`."""
    return [sys.executable, "-m", "tlytics", "--host", "127.0.0.1", "--port", str(port), *flags]


def _logs_above_info(args: list[str]) -> bool:
    """Whether `args` set a log level that leaves out info lines (`--log-level error`)."""
    for flag, value in itertools.pairwise(args):
        if flag == "--log-level" and value.lower() in ("warning", "error", "critical"):
            return True
    return any(
        arg.startswith("--log-level=") and arg.split("=", 1)[1].lower() in ("warning", "error", "critical")
        for arg in args
    )


class ServerProcess:
    """A real `python -m tlytics` on 127.0.0.1.

    Its port is the one it binds with `--port 0`, read back from its `listening` log line, so
    no other process can take it between choosing and binding (as with a port chosen by
    free_port). Only when the address is asked for before `start` (a client pointed at a server
    not up yet) or set (a restart on the same address) is the port chosen beforehand.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        flush: str = "100ms",
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.extra_args = extra_args or []
        self.db_path = db_path
        self.flush = flush
        self._port = port
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = db_path.parent / f"server-{uuid.uuid4().hex[:8]}.log"

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = free_port()  # asked for before start: chosen now, bound later
        return self._port

    @port.setter
    def port(self, port: int) -> None:
        self._port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @url.setter
    def url(self, url: str) -> None:
        port = urllib.parse.urlsplit(url).port
        assert port is not None, url
        self._port = port

    def start(self, *, wait_s: float = 60.0, healthy: bool = True) -> ServerProcess:
        """Start it and wait until /health answers 200 (or, unless `healthy`, answers at all:
        a server whose store does not answer is up, and says 503)."""
        env = server_environment(self.extra_env)
        if self._port is None and _logs_above_info(self.extra_args):
            self._port = free_port()  # its `listening` line (info) will not be written
        self._log = open(self.log_path, "ab")  # noqa: SIM115  kept open for the server's lifetime, closed by kill/stop
        log_start = self.log_path.stat().st_size  # a restart appends to the same log
        self.process = subprocess.Popen(
            server_argv(self._port or 0, "--db", str(self.db_path), "--flush", self.flush, *self.extra_args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, as under a terminal or systemd
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            if self._port is None:
                self._port = self._listening_port(log_start)
                if self._port is None:
                    time.sleep(0.05)
                    continue
            try:
                status, _ = http_json("GET", f"{self.url}/health", timeout_s=1.0)
                if status == 200 or not healthy:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not answer within {wait_s}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The log's JSON lines (objects), in order; anything else (a line being written) skipped."""
        records = []
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def _listening_port(self, log_start: int) -> int | None:
        """The port in this run's `listening` log line, once it is written."""
        with open(self.log_path, "rb") as log:
            log.seek(log_start)
            for line in log:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # not a JSON log line, or one still being written
                if isinstance(record, dict) and record.get("event") == "listening":
                    return int(record["port"])
        return None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close_log()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """A clean stop by signal; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout_s)
        self._close_log()
        return code

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def reading_key(self) -> str | None:
        """A key of this server that may read raw events (from its flags or environment), if any."""
        for flag in ("--read-key", "--admin-key"):
            if flag in self.extra_args[:-1]:
                return self.extra_args[self.extra_args.index(flag) + 1]
        for variable in ("TLYTICS_READ_KEYS", "TLYTICS_ADMIN_KEYS"):
            if self.extra_env.get(variable):
                return self.extra_env[variable].split(",")[0].strip()
        if "--keys-file" in self.extra_args[:-1]:
            # Its `scope secret [label]` lines, comments and blank lines aside.
            keys_file = Path(self.extra_args[self.extra_args.index("--keys-file") + 1])
            for line in keys_file.read_text().splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] in ("read", "admin"):
                    return words[1]
        return None

    def wait_drained(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until the spool is empty; return the last /health body."""
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        # /health's figures are for readers once the server has reading keys (issue 19).
        key = self.reading_key()
        headers = {"Authorization": f"Bearer {key}"} if key is not None else None
        while time.monotonic() < deadline:
            _, body = http_json("GET", f"{self.url}/health", headers=headers)
            if body["spool_entries"] == 0:
                return body
            time.sleep(0.05)
        raise AssertionError(f"spool not drained in {timeout_s}s: {body}")

    def stored_ids(self) -> list[str]:
        """Every stored event id, read through /view page by page."""
        ids: list[str] = []
        page = 1
        while page <= 10_000:
            status, body = http_json("GET", f"{self.url}/view?page={page}&page_size=1000")
            assert status == 200
            ids.extend(event["id"] for event in body["events"])
            if page >= body["total_pages"]:
                break
            page += 1
        return ids


class Sender:
    """Threads posting batches of fresh-id events until stopped; records what got a 200."""

    def __init__(self, url: str, *, threads: int = 4, batch_size: int = 50, max_run_s: float = 120.0) -> None:
        self.url = url
        self.batch_size = batch_size
        # Bounded even if nobody stops it (the test's own timeout is as long); stop() fails
        # if a thread got there first, since the load the test counted on had ended unseen.
        self.max_run_s = max_run_s
        self.ran_out = False
        self.acknowledged: set[str] = set()
        self.sent: set[str] = set()
        # (monotonic start, end, HTTP status or "cut off") of every request that was sent
        self.answers: list[tuple[float, float, int | str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def start(self) -> Sender:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, n: int) -> None:
        deadline = time.monotonic() + self.max_run_s
        path = "/events" if n % 2 else "/batch"
        while not self._stop.is_set():
            if time.monotonic() >= deadline:
                self.ran_out = True
                return
            ids = [str(uuid.uuid4()) for _ in range(self.batch_size)]
            events = [{"id": i, "key": "crash_test", "data": {"thread": n}} for i in ids]
            # A duplicate inside the request must still count once.
            events.append(dict(events[0]))
            body: Any = events if path == "/events" else {"events": events}
            with self._lock:
                self.sent.update(ids)
            started = time.monotonic()
            try:
                status, _ = http_json("POST", self.url + path, body, timeout_s=5.0)
            except urllib.error.URLError:
                return  # refused or unreachable: the server is gone (nothing was read)
            except OSError:
                with self._lock:  # sent, then the connection broke before any answer
                    self.answers.append((started, time.monotonic(), "cut off"))
                return
            with self._lock:
                self.answers.append((started, time.monotonic(), status))
                if status == 200:
                    self.acknowledged.update(ids)

    def wait_acknowledged(self, timeout_s: float = 30.0) -> Sender:
        """Wait for the first 200 (on a busy machine the stream can take a while to get going);
        fail, saying what the server answered meanwhile, if none comes within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self.acknowledged:
            if time.monotonic() >= deadline:
                with self._lock:
                    answers = [outcome for _, _, outcome in self.answers]
                running = sum(thread.is_alive() for thread in self._threads)
                raise AssertionError(
                    f"no request to {self.url} acknowledged within {timeout_s}s: {len(answers)} answers"
                    f" {sorted(set(map(str, answers)))}, {running} of {len(self._threads)} sender threads running"
                )
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        stuck = sum(thread.is_alive() for thread in self._threads)
        assert not stuck, f"{stuck} sender threads still posting to {self.url} 10s after stop()"
        assert not self.ran_out, f"the sender to {self.url} stopped by itself after {self.max_run_s}s, before stop()"


def kill_under_load(
    server: ServerProcess, load_s: float, *, wait_acknowledged: bool = True, **sender_options: Any
) -> Sender:
    """The kill-under-load scenario: a Sender (`sender_options`: threads, batch_size) posts to
    the started `server`, which is SIGKILLed `load_s` into the load (counted from the first
    acknowledgement unless `wait_acknowledged` is False, for a kill that may come before any);
    returns the stopped Sender, holding what was acknowledged and what was sent."""
    sender = Sender(server.url, **sender_options).start()
    if wait_acknowledged:
        sender.wait_acknowledged()
    time.sleep(load_s)  # the kill's moment, not a wait for something: nothing is asserted after it
    server.kill()
    sender.stop()
    return sender


def assert_exactly_once(server: ServerProcess, acknowledged: set[str], sent: set[str]) -> None:
    server.wait_drained()
    stored = server.stored_ids()
    print(f"acknowledged={len(acknowledged)} sent={len(sent)} stored={len(stored)}")
    assert len(stored) == len(set(stored)), "an event is stored twice"
    # /health's stored_events is its store probe's last answer: a probe that began before the
    # writer's last commit answers for the store as it was then, though the spool it reads
    # afterwards is already empty. So it must come to agree with the events read, not at once.
    key = server.reading_key()
    headers = {"Authorization": f"Bearer {key}"} if key is not None else None
    said: list[int | None] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not said or said[-1] != len(stored)):
        if said:
            time.sleep(0.05)
        said.append(http_json("GET", f"{server.url}/health", headers=headers)[1]["stored_events"])
    assert said[-1] == len(stored), f"/health's stored_events never came to {len(stored)}: {said[-5:]}"
    missing = acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert set(stored) <= sent, "the store holds events nobody sent"


def three_days_of_visits() -> list[dict[str, Any]]:
    """3,000 `visit` events, 1,000 a day from 2025-01-01, of 700 users (`u0`…`u699`, every one
    each day) alternately on the `free` and `pro` plan: the unique-count tests' server data."""
    return [
        {
            "id": str(uuid.UUID(int=n + 1)),
            "key": "visit",
            "timestamp": f"2025-01-0{1 + n // 1000}T{n % 1000 // 60 % 24:02d}:{n % 60:02d}:00Z",
            "data": {"user": f"u{n % 700}", "plan": "pro" if n % 2 else "free"},
        }
        for n in range(3_000)
    ]
