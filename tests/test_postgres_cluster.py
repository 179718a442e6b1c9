"""The tests' throwaway PostgreSQL cluster under pytest-xdist: a port it chose for itself that
another process took first (another worker's cluster) is not a failed test run."""

from __future__ import annotations

import socket

import psycopg
import pytest

from tests.postgres_cluster import PostgresCluster, postgres_missing


def test_a_cluster_whose_chosen_port_is_taken_starts_on_another() -> None:
    missing = postgres_missing()
    if missing is not None:
        pytest.skip(missing)
    cluster = PostgresCluster()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        cluster.port = taken  # as if another process had bound it between choosing and starting
        try:
            cluster.start()
            assert cluster.port != taken
            with psycopg.connect(cluster.url) as connection:
                assert connection.execute("SELECT 1").fetchone() == (1,)
        finally:
            cluster.remove()
