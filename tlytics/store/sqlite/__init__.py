"""The embedded SQLite store on APSW, by role: `SQLiteWriter` (the single write connection,
opened by the writer only; it runs the migrations) and `SQLiteReader` (read-only connections,
one per reading thread). `SQLiteStore` holds both on one file, for tools and tests that read
what they wrote; the server keeps the two apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tlytics.store.sqlite.connection import Synchronous
from tlytics.store.sqlite.reader import SQLiteReader
from tlytics.store.sqlite.schema import SCHEMA_VERSION
from tlytics.store.sqlite.writes import SQLiteWriter


def migrate_store(path: str | Path, *, synchronous: Synchronous = "normal") -> None:
    """Bring the store at `path` to this version's schema (creating it when missing), so that
    readers opened afterwards find the schema they expect; StoreError when it cannot."""
    SQLiteWriter(path, synchronous=synchronous).close()


class SQLiteStore(SQLiteWriter, SQLiteReader):
    """Both sides of the store on one file (opening it migrates)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "normal",
        unique_properties: Sequence[str] | None = None,
        declared_properties: Sequence[str] | None = None,
    ) -> None:
        SQLiteWriter.__init__(
            self,
            path,
            synchronous=synchronous,
            unique_properties=unique_properties,
            declared_properties=declared_properties,
        )
        SQLiteReader.__init__(self, path)

    def close(self) -> None:
        SQLiteReader.close(self)
        SQLiteWriter.close(self)


__all__ = [
    "SCHEMA_VERSION",
    "SQLiteReader",
    "SQLiteStore",
    "SQLiteWriter",
    "Synchronous",
    "migrate_store",
]
