"""The event store: its contract (`StoreWriter` for the writer, `StoreReader` for the
handlers) and the embedded SQLite implementation.

Everything the server needs from a store is in those two protocols, so a PostgreSQL or
ClickHouse backend is a new package implementing them, not a rewrite of the ingest path.
"""

from tlytics.store.base import EventFilter, Page, Position, StoredEvent, StoreReader, StoreRow, StoreWriter
from tlytics.store.sqlite import SQLiteReader, SQLiteStore, SQLiteWriter, migrate_store

__all__ = [
    "EventFilter",
    "Page",
    "Position",
    "SQLiteReader",
    "SQLiteStore",
    "SQLiteWriter",
    "StoreReader",
    "StoreRow",
    "StoreWriter",
    "StoredEvent",
    "migrate_store",
]
