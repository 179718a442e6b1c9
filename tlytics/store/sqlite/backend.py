"""The embedded SQLite store as a `Backend` (tlytics.store.backend): one local file, locked for
one server, that must open when the server starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlytics.errors import StoreError
from tlytics.store.backend import StoreSettings, reader_on_demand
from tlytics.store.base import StoreReader, StoreWriter
from tlytics.store.on_demand import ReaderOnDemand
from tlytics.store.sqlite import SQLiteWriter, migrate_store
from tlytics.store.sqlite.reader import QUERIES, SQLiteReader


class SQLiteBackend:
    """The SQLite file at the settings' `db_path`."""

    queries = QUERIES
    starts_without_store = False

    def __init__(self, settings: StoreSettings) -> None:
        self._settings = settings
        self.path = settings.db_path

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def lock_path(self) -> Path | None:
        return self.path

    def node_name(self) -> str | None:
        return None

    def migrate(self) -> None:
        migrate_store(self.path, synchronous=self._settings.spool_sync)

    def open_reader(self, statement_timeout_s: float) -> StoreReader[Any]:
        # SQLite's read connections stop a read over budget themselves (a progress handler).
        return SQLiteReader(self.path)

    def reader(self, statement_timeout_s: float) -> ReaderOnDemand:
        return reader_on_demand(self, statement_timeout_s)

    def writer(self) -> StoreWriter:
        # The store syncs at least as hard as the spool: with a "full" spool, a power loss
        # must not lose store commits whose spool entries were already removed.
        return SQLiteWriter(
            self.path,
            synchronous=self._settings.spool_sync,
            unique_properties=self._settings.unique_properties,
            declared_properties=self._settings.declared_properties,
        )

    # A local file is there or not: no error of it means "try again later".
    def unreachable(self, exc: StoreError) -> bool:
        return False

    def connection_lost(self, exc: StoreError) -> bool:
        return False

    def refuses_for_good(self, exc: StoreError) -> bool:
        return False
