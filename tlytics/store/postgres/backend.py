"""PostgreSQL as a `Backend` (tlytics.store.backend): a database shared by any number of
servers (nothing local to lock), which may be down as a server starts; and the one place
where psycopg's errors are sorted by what they mean for the server (see connection.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlytics.errors import StoreError
from tlytics.setting_values import masked_url
from tlytics.store.backend import StoreSettings, reader_on_demand
from tlytics.store.base import StoreReader, StoreWriter
from tlytics.store.node import node_name
from tlytics.store.on_demand import ReaderOnDemand
from tlytics.store.postgres import connection
from tlytics.store.postgres.reader import QUERIES, PostgresReader
from tlytics.store.postgres.schema import migrate_postgres
from tlytics.store.postgres.writes import PostgresWriter


class PostgresBackend:
    """The PostgreSQL database at the settings' `store_url`."""

    queries = QUERIES
    starts_without_store = True

    def __init__(self, settings: StoreSettings) -> None:
        assert settings.store_url is not None, "the chooser gives PostgreSQL a URL"
        self._settings = settings
        self.url = settings.store_url

    def describe(self) -> str:
        return masked_url(self.url)

    def lock_path(self) -> Path | None:
        return None  # shared by design: only each server's spool is its own

    def node_name(self) -> str | None:
        return node_name(self._settings.resolved_spool_dir)

    def migrate(self) -> None:
        migrate_postgres(self.url)

    def open_reader(self, statement_timeout_s: float) -> StoreReader[Any]:
        # PostgreSQL may have been down as the server started: its migrations may not have run.
        migrate_postgres(self.url)
        return PostgresReader(connection.reader_url(self.url, statement_timeout_s=statement_timeout_s))

    def reader(self, statement_timeout_s: float) -> ReaderOnDemand:
        return reader_on_demand(self, statement_timeout_s)

    def writer(self) -> StoreWriter:
        # PostgreSQL commits with synchronous_commit on whatever --spool-sync says.
        return PostgresWriter(
            self.url,
            node=node_name(self._settings.resolved_spool_dir),
            unique_properties=self._settings.unique_properties,
            declared_properties=self._settings.declared_properties,
        )

    def unreachable(self, exc: StoreError) -> bool:
        return connection.unreachable(exc)

    def connection_lost(self, exc: StoreError) -> bool:
        return connection.connection_lost(exc)

    def refuses_for_good(self, exc: StoreError) -> bool:
        return connection.refuses_for_good(exc)
