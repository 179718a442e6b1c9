"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, a server on a free
loopback port (its socket in that dir too), stopped and removed at the end; no Docker.

As root the cluster belongs to the `postgres` user (PostgreSQL refuses to run as root), so
its commands run through `runuser`; otherwise they run as the current user. The binaries are
Debian's (`/usr/lib/postgresql/15/bin`, or `TLYTICS_PG_BIN`); without them the fixture skips
with that reason (`.ci/run` installs them, so CI never skips).

`fsync=off` makes the contract suite fast; it is only for tests that make no claim about
surviving a crash of PostgreSQL itself. A test that does starts `PostgresCluster(fsync=True)`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg
import pytest


def _debian_pg_bin() -> Path:
    """Debian's binaries: version 15 where it is installed (Debian 12's), else the newest."""
    preferred = Path("/usr/lib/postgresql/15/bin")
    if preferred.exists():
        return preferred
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0
    )
    return found[-1].parent if found else preferred


PG_BIN = Path(os.environ["TLYTICS_PG_BIN"]) if "TLYTICS_PG_BIN" in os.environ else _debian_pg_bin()
StopMode = Literal["smart", "fast", "immediate"]


def postgres_missing() -> str | None:
    """Why no cluster can be started here, or None when it can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"PostgreSQL binaries not found ({PG_BIN / tool}): apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root needs runuser to start PostgreSQL as the postgres user"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """One initdb'd cluster in a temp dir. `start()` / `stop(mode)` may be called again and
    again (fault tests stop it mid-load and restart it on the same port); `remove()` stops it
    and deletes its files."""

    def __init__(self, *, fsync: bool = False, port: int | None = None) -> None:
        # Not under pytest's tmp dirs: those are 0700 and root's, so the postgres user could
        # not reach a cluster inside them.
        self.directory = Path(tempfile.mkdtemp(prefix="tlytics-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.port = port or free_port()
        # A port chosen here may be taken by another process (another pytest-xdist worker's
        # cluster) before PostgreSQL binds it: the first start then tries another one.
        self._may_change_port = port is None
        self.fsync = fsync
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N", "-E", "UTF8")

    @property
    def url(self) -> str:
        """The `postgres` database (the one every cluster has)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *command: str) -> None:
        if self._as_root:
            command = ("runuser", "-u", "postgres", "--", *command)
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if completed.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed: {completed.stdout}{completed.stderr}{log}")

    def start(self) -> None:
        for attempt in range(3):
            try:
                self._start()
            except RuntimeError as exc:
                if not self._may_change_port or attempt == 2 or "Address already in use" not in str(exc):
                    raise
                self.port = free_port()
            else:
                break
        self._may_change_port = False  # fault tests stop it and start it again on the same port

    def _start(self) -> None:
        options = [f"-k {self.directory}", f"-p {self.port}", "-c listen_addresses=127.0.0.1", "-c max_connections=200"]
        if not self.fsync:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", " ".join(options), "-w", "start"
        )

    def stop(self, mode: StopMode = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str, *, template: str = "template0") -> str:
        """A new empty database; its URL."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass  # already gone: the files go anyway
        shutil.rmtree(self.directory, ignore_errors=True)


def started_cluster() -> Iterator[PostgresCluster]:
    """A throwaway cluster, started, removed after (the test is skipped without PostgreSQL)."""
    missing = postgres_missing()
    if missing is not None:
        pytest.skip(missing)
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the whole session (fsync off): tests make their own databases in it."""
    yield from started_cluster()
