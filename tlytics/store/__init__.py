"""The event store: its contract (`StoreWriter` for the writer, `StoreReader` running a
dialect's query functions for the handlers) and the embedded SQLite implementation.

The server chooses its store once, `tlytics.store.open.open_backend`, and asks the backend it
gets for everything else, so a ClickHouse backend would be a new package (a `Backend`, its
reader, writer and query functions) and one line in that chooser, not a rewrite of the ingest
path.
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
