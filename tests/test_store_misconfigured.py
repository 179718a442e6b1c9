"""A store that refuses the server for good (issue 19, item 9): no such database, no such role,
a role that may not create the schema. The node does not start and says why, with a non-zero
exit, unless the operator asks to start anyway (`--start-without-store`): then it acknowledges
into its spool and /health says 503 with the cause. A store that is only down (a closed port, as
when PostgreSQL starts after the node under docker compose) never stops the start: see
test_store_choice (the chooser itself: test_store_backend)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import free_port, http_json, server_argv
from tests.postgres_cluster import PostgresCluster


def _start(tmp_path: Path, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """Start a node on `url` that should not get past its start; its exit and output."""
    argv = server_argv(free_port(), "--store", url, "--spool", str(tmp_path / "spool"), *flags)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def weak_role_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database and a role that may log in but not create anything in it."""
    name = f"weak_{uuid.uuid4().hex[:10]}"
    url = postgres_cluster.create_database(name)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {name} LOGIN")
        connection.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {name}")
    yield f"postgresql://{name}@127.0.0.1:{postgres_cluster.port}/{name}"
    postgres_cluster.drop_database(name)
    with psycopg.connect(postgres_cluster.url, autocommit=True) as connection:
        connection.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.parametrize("what", ["no such database", "no such role"])
def test_a_store_that_refuses_the_node_stops_its_start(
    tmp_path: Path, postgres_cluster: PostgresCluster, what: str
) -> None:
    if what == "no such database":
        url = postgres_cluster.database_url(f"missing_{uuid.uuid4().hex[:8]}")
    else:
        url = f"postgresql://nobody_{uuid.uuid4().hex[:8]}@127.0.0.1:{postgres_cluster.port}/postgres"
    started = _start(tmp_path, url)
    assert started.returncode == 1, started
    assert "refuses this server" in started.stderr and "does not exist" in started.stderr, started.stderr
    assert "--start-without-store" in started.stderr


def test_a_role_that_may_not_create_the_schema_stops_the_start(tmp_path: Path, weak_role_database: str) -> None:
    started = _start(tmp_path, weak_role_database)
    assert started.returncode == 1, started
    assert "refuses this server" in started.stderr and "permission denied" in started.stderr, started.stderr


def test_start_without_store_starts_anyway_and_health_says_why(
    server_factory: Any, tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.database_url(f"missing_{uuid.uuid4().hex[:8]}")
    server = server_factory(
        tmp_path / "unused.db",
        extra_args=["--store", url, "--spool", str(tmp_path / "spool"), "--start-without-store"],
        port=free_port(),  # the health check reads the port from the server's flags: not 0
    ).start(healthy=False)
    status, body = http_json("POST", server.url + "/events", [{"key": "kept"}])
    assert status == 200, body
    status, health = http_json("GET", server.url + "/health")
    assert status == 503 and health["status"] == "unavailable" and "store_unreachable" in health["causes"], health
    assert any("does not exist" in problem for problem in health["problems"]), health
    # The container health check fails, and says why (docker inspect shows it).
    assert server.process is not None
    check = subprocess.run(
        [sys.executable, "-m", "tlytics.healthcheck", "--pid", str(server.process.pid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1 and "503 store_unreachable" in check.stderr, check
