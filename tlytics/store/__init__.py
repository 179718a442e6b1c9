"""The event store: a small interface (`Store`) and its embedded SQLite implementation.

Everything the server needs from a store is in `Store`, so a PostgreSQL or ClickHouse backend
is a new module implementing it, not a rewrite of the ingest path.
"""

from tlytics.store.base import EventFilter, Page, Position, Store, StoredEvent, StoreRow
from tlytics.store.sqlite import SQLiteStore

__all__ = ["EventFilter", "Page", "Position", "SQLiteStore", "Store", "StoreRow", "StoredEvent"]
