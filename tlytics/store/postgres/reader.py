"""The read side of the PostgreSQL store: `PostgresReader` runs the query functions of
`QUERIES` (reads.py, stats_reads.py, property_reads.py) on one connection per reading thread.

Each thread opens its own connection on its first read (and again after one broke, e.g. when
PostgreSQL restarted), so a slow filtered count on one thread holds up neither `/health` on
another nor any writer. The schema is the writers' business: a connection refuses a database
whose migrations have not run yet instead of misreading it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import psycopg
from psycopg import IsolationLevel

from tlytics.errors import StoreError
from tlytics.store.base import Queries, StoreReader
from tlytics.store.postgres import property_reads, reads, stats_reads
from tlytics.store.postgres.connection import connect, describe, store_errors, unusable
from tlytics.store.postgres.schema import SCHEMA_VERSION, Connection, schema_version
from tlytics.store.sql import ThreadConnections

T = TypeVar("T")
Args = TypeVarTuple("Args")

QUERIES: Queries[Connection] = Queries(
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


class PostgresReader(StoreReader[Connection]):
    """The read side of the store on one PostgreSQL database; callable from any number of threads."""

    queries = QUERIES

    def __init__(self, url: str) -> None:
        self.url = url
        self._where = describe(url)
        self._connections: ThreadConnections[Connection] = ThreadConnections(f"store {self._where}", _close_quietly)

    def run(self, fn: Callable[[Connection, *Args], T], *args: *Args) -> T:
        connection = self._reading()
        try:
            return fn(connection, *args)
        except StoreError:
            if unusable(connection):
                self._connections.forget(connection)
            raise

    def _reading(self) -> Connection:
        """This thread's connection, opened on its first read or after the last one broke."""
        return self._connections.get(self._open, usable=lambda connection: not unusable(connection))

    def _open(self) -> Connection:
        with store_errors(f"opening store {self._where} for reading"):
            connection = connect(self.url, application="tlytics-reader")
            connection.isolation_level = IsolationLevel.REPEATABLE_READ
            connection.read_only = True
            try:
                version = schema_version(connection)
            except BaseException:
                connection.close()
                raise
        if version != SCHEMA_VERSION:
            connection.close()
            raise StoreError(
                f"{self._where} has schema version {version}, this Tlytics reads {SCHEMA_VERSION}:"
                " the writer side migrates it when it opens"
            )
        return connection

    def close(self) -> None:
        """Close every thread's connection; call once no read is running."""
        self._connections.close()


def _close_quietly(connection: Connection) -> None:
    try:
        connection.close()
    except psycopg.Error:
        pass  # read-only, or broken already: nothing to lose
