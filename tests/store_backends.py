"""The store backends the contract suite (test_store_contract.py) runs against.

A backend opens the two sides of a store (`StoreWriter`, `StoreReader`) on one fresh
database, can write a store as the oldest schema it still migrates from, and closes what it
opened. BACKENDS names each backend with the function that opens it for one test (from that
test's fixtures: a tmp_path for SQLite, the session's cluster for PostgreSQL).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import apsw
import psycopg
import pytest

from tests.postgres_cluster import PostgresCluster
from tlytics.store import SQLiteReader, SQLiteWriter, StoreReader, StoreRow, StoreWriter, migrate_store
from tlytics.store.postgres import PostgresReader, PostgresWriter, migrate_postgres


class StoreBackend(Protocol):
    """What the contract suite needs of a backend."""

    def open_writer(self, unique_properties: Sequence[str] | None = None) -> StoreWriter: ...

    def open_reader(self) -> StoreReader: ...

    def write_oldest_schema(self, rows: Sequence[StoreRow]) -> None: ...

    def close(self) -> None: ...


class SQLiteBackend:
    """The embedded backend: one SQLite file under the test's tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "contract.db"
        self._opened: list[StoreWriter | StoreReader] = []

    def open_writer(self, unique_properties: Sequence[str] | None = None) -> StoreWriter:
        writer = SQLiteWriter(self.path, unique_properties=unique_properties)
        self._opened.append(writer)
        return writer

    def open_reader(self) -> StoreReader:
        migrate_store(self.path)  # as the server does at start, before any read
        reader = SQLiteReader(self.path)
        self._opened.append(reader)
        return reader

    def write_oldest_schema(self, rows: Sequence[StoreRow]) -> None:
        """A store as the first version wrote it (schema 1: events and the counter only, data
        kept as it was sent), holding `rows`."""
        from tlytics.store.sqlite.schema import MIGRATIONS

        connection = apsw.Connection(str(self.path))
        with connection:
            first = MIGRATIONS[0]
            assert isinstance(first, str)
            connection.execute(first)
            connection.pragma("user_version", 1)
            connection.executemany("INSERT INTO events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?)", rows)
            connection.execute("UPDATE counters SET value = ? WHERE name = 'events'", (len(rows),))
        connection.close()

    def close(self) -> None:
        for opened in reversed(self._opened):
            opened.close()
        self._opened.clear()


class PostgresBackend:
    """PostgreSQL: a database of its own in the session's cluster, dropped at the end."""

    _numbers = itertools.count()

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self.database = f"contract_{next(self._numbers)}"
        self.url = cluster.create_database(self.database)
        self._opened: list[StoreWriter | StoreReader] = []

    def open_writer(self, unique_properties: Sequence[str] | None = None) -> StoreWriter:
        writer = PostgresWriter(self.url, node="contract", unique_properties=unique_properties)
        self._opened.append(writer)
        return writer

    def open_reader(self) -> StoreReader:
        migrate_postgres(self.url)  # as the server does at start, before any read
        reader = PostgresReader(self.url)
        self._opened.append(reader)
        return reader

    def write_oldest_schema(self, rows: Sequence[StoreRow]) -> None:
        """A database at the PostgreSQL store's version 1 (the bare events and erased ids,
        as a bulk load leaves it: no counters or rollups, data kept as it was loaded), holding
        `rows`."""
        from tlytics.store.postgres.schema import MIGRATIONS

        first = MIGRATIONS[0]
        assert isinstance(first, str)
        with psycopg.connect(self.url) as connection:
            connection.execute(first)
            connection.execute("CREATE TABLE tlytics_schema (version integer NOT NULL)")
            connection.execute("INSERT INTO tlytics_schema (version) VALUES (1)")
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO events (id, key, ts, received_at, data) VALUES (%s, %s, %s, %s, %s)",
                    [(uuid.UUID(bytes=r[0]), *r[1:]) for r in rows],
                )

    def close(self) -> None:
        for opened in reversed(self._opened):
            opened.close()
        self._opened.clear()
        self.cluster.drop_database(self.database)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], StoreBackend]] = {
    "sqlite": lambda request: SQLiteBackend(request.getfixturevalue("tmp_path")),
    "postgresql": lambda request: PostgresBackend(request.getfixturevalue("postgres_cluster")),
}
