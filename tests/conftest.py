"""Shared fixtures: an in-process app on a real loopback socket (pytest-aiohttp), and a real
`tlytics` subprocess for the tests that kill it."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tlytics.ingest import Settings, create_app
from tlytics.ingest.keys import SPOOL, STORE, WRITER


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A long flush period: tests decide when the writer drains (app_flush), so they can look
    # at the spool and the store in between.
    # The writer on a thread keeps these in-process tests fast; the subprocess servers (and
    # test_writer's process tests) run the default writer process.
    return Settings(db_path=tmp_path / "analytics.db", flush_period_s=3600.0, port=8081, writer_process=False)


@pytest.fixture
async def app(settings: Settings) -> web.Application:
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> TestClient[Any, Any]:
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def app_flush(app: web.Application) -> None:
    """Drain the spool into the store now."""
    assert await app[WRITER].flush(timeout_s=30.0)


def spool_count(app: web.Application) -> int:
    return app[SPOOL].count()


def store_count(app: web.Application) -> int:
    return app[STORE].count()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(method: str, url: str, body: Any = None, timeout_s: float = 10.0) -> tuple[int, Any]:
    """A blocking HTTP call for subprocess tests; returns (status, decoded JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
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


class ServerProcess:
    """A real `python -m tlytics` on 127.0.0.1 and a free port."""

    def __init__(
        self,
        db_path: Path,
        *,
        flush: str = "100ms",
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.extra_args = extra_args or []
        self.db_path = db_path
        self.flush = flush
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = db_path.parent / f"server-{self.port}.log"

    def start(self, *, wait_s: float = 60.0) -> ServerProcess:
        env = {**os.environ, **self.extra_env}
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tlytics", "--host", "127.0.0.1", "--port", str(self.port),
             "--db", str(self.db_path), "--flush", self.flush, *self.extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, as under a terminal or systemd
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                status, _ = http_json("GET", f"{self.url}/health", timeout_s=1.0)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not answer within {wait_s}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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

    def wait_drained(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until the spool is empty; return the last /health body."""
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            _, body = http_json("GET", f"{self.url}/health")
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


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[ServerProcess] = []

    def make(db_path: Path | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(db_path or tmp_path / "analytics.db", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()
