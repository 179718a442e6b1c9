"""The PostgreSQL store, for several ingest nodes on one database, by role: `PostgresWriter`
(one per node, named by `node`; opening it runs the migrations) and `PostgresReader` (one
connection per reading thread). `migrate_postgres` brings a database to this version's schema,
once even when several nodes start at the same moment.
"""

from __future__ import annotations

from tlytics.store.postgres.reader import PostgresReader
from tlytics.store.postgres.schema import SCHEMA_VERSION, migrate_postgres
from tlytics.store.postgres.writes import PostgresWriter

__all__ = ["SCHEMA_VERSION", "PostgresReader", "PostgresWriter", "migrate_postgres"]
