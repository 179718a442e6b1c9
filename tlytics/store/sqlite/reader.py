"""The read side of the SQLite store: `SQLiteReader` runs the query functions of `QUERIES`
(reads.py, stats_reads.py, property_reads.py) on read-only connections, one per reading thread.

Each thread opens its own connection on its first read (WAL lets every one of them read while
the writer commits), so a slow filtered count on one thread holds up neither `/health` on
another nor the writer. The schema is the writer's business: a connection refuses a store
whose migrations have not run yet instead of misreading it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, TypeVarTuple

import apsw

from tlytics.errors import StoreError
from tlytics.store.base import Queries, StoreReader
from tlytics.store.sql import ThreadConnections
from tlytics.store.sqlite import property_reads, reads, stats_reads
from tlytics.store.sqlite.connection import connect, fold_wal_on_close, store_errors
from tlytics.store.sqlite.schema import SCHEMA_VERSION, schema_version

T = TypeVar("T")
Args = TypeVarTuple("Args")

QUERIES: Queries[apsw.Connection] = Queries(
    count=reads.count,
    page=reads.page,
    keys_summary=reads.keys_summary,
    bucket_counts=stats_reads.bucket_counts,
    unique_count=stats_reads.unique_count,
    unique_counts=stats_reads.unique_counts,
    funnel=property_reads.funnel,
    breakdown=property_reads.breakdown,
    existing_ids=reads.existing_ids,
)


class SQLiteReader(StoreReader[apsw.Connection]):
    """The read side of the store on one SQLite file; callable from any number of threads."""

    queries = QUERIES

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._connections: ThreadConnections[apsw.Connection] = ThreadConnections(f"store {self.path}", _close_quietly)

    def run(self, fn: Callable[[apsw.Connection, *Args], T], *args: *Args) -> T:
        return fn(self._read_connection(), *args)

    def _read_connection(self) -> apsw.Connection:
        """This thread's read-only connection, opened on its first read."""
        return self._connections.get(self._open)

    def _open(self) -> apsw.Connection:
        with store_errors(f"opening store {self.path} for reading"):
            connection = connect(self.path, "normal", readonly=True)  # synchronous: no writes here
            version = schema_version(connection)
        if version != SCHEMA_VERSION:
            connection.close()
            raise StoreError(
                f"{self.path} has schema version {version}, this Tlytics reads {SCHEMA_VERSION}:"
                " the writer side migrates it when it opens"
            )
        return connection

    def close(self) -> None:
        """Close every thread's connection; call once no read is running."""
        self._connections.close()
        fold_wal_on_close(self.path)


def _close_quietly(connection: apsw.Connection) -> None:
    try:
        connection.close()
    except apsw.Error:
        pass  # read-only: nothing to lose
