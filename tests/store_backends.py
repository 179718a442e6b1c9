"""The store backends the contract suite (test_store_contract.py) runs against.

A backend opens the two sides of a store (`StoreWriter`, `StoreReader`) on one fresh
database, can write a store as the oldest schema it still migrates from, and closes what it
opened. A new backend (PostgreSQL) is one more class here and one more name in BACKENDS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import apsw

from tlytics.store import SQLiteReader, SQLiteWriter, StoreReader, StoreRow, StoreWriter, migrate_store


class StoreBackend(Protocol):
    """What the contract suite needs of a backend."""

    def open_writer(self) -> StoreWriter: ...

    def open_reader(self) -> StoreReader: ...

    def write_oldest_schema(self, rows: Sequence[StoreRow]) -> None: ...

    def close(self) -> None: ...


class SQLiteBackend:
    """The embedded backend: one SQLite file under the test's tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "contract.db"
        self._opened: list[StoreWriter | StoreReader] = []

    def open_writer(self) -> StoreWriter:
        writer = SQLiteWriter(self.path)
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


BACKENDS: dict[str, type[SQLiteBackend]] = {"sqlite": SQLiteBackend}
