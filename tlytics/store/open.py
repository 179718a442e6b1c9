"""Opening the store the settings choose (`--store postgresql://…`, else the SQLite file at
`--db`): `open_backend` is the one place that tells the kinds apart, by the URL's scheme; the
server's handlers (`open_served_reader`) and its writer (`open_writer`, in its thread or its
process of its own) open the store through the backend it gives. This module knows the server's
settings only by the few values it reads (`StoreSettings`), so the writer process imports the
store and not the HTTP server that declares those settings.

SQLite is a local file: if it cannot be opened the server does not start. PostgreSQL is a
server of its own that may be down when this one starts or go down later; events are still
acknowledged into the local spool meanwhile. So its reader opens on demand (a read answers 503
until PostgreSQL answers) and the writer opens its store on first use, migrating it, and tries
again after a failure with backoff (see WriteScheduler), so it catches up once PostgreSQL is back.
A PostgreSQL that answers but refuses this server (wrong password, no such database) is not
"down": the server does not start, unless told to (`--start-without-store`).

This module imports neither driver of a store it does not use: psycopg stays unloaded for SQLite.
"""

from __future__ import annotations

import structlog

from tlytics.errors import StoreError, StoreMisconfigured
from tlytics.store.backend import Backend, StoreAt, StoreSettings
from tlytics.store.base import StoreWriter
from tlytics.store.on_demand import ReaderOnDemand

log = structlog.get_logger("tlytics.store")

KNOWN_SCHEMES = ("sqlite:", "postgresql://", "postgres://")


def open_backend(store: str | StoreSettings) -> Backend:
    """The backend of the store the settings choose (`--store`, else the SQLite file at `--db`),
    or at a URL; StoreMisconfigured naming the known kinds for any other."""
    settings = StoreAt.of(store) if isinstance(store, str) else store
    url = settings.store_url or f"sqlite:{settings.db_path}"
    scheme = url.partition(":")[0].lower()
    # Imported here: a server on SQLite never loads psycopg.
    match scheme:
        case "sqlite":
            from tlytics.store.sqlite.backend import SQLiteBackend

            return SQLiteBackend(settings)
        case "postgresql" | "postgres":
            from tlytics.store.postgres.backend import PostgresBackend

            return PostgresBackend(settings)
    raise StoreMisconfigured(f"no store of the kind {scheme!r}: the known ones are {', '.join(KNOWN_SCHEMES)}")


def open_served_reader(backend: Backend, *, statement_timeout_s: float, start_without_store: bool) -> ReaderOnDemand:
    """The store's read side for the handlers, migrated first, its reads stopped at
    `statement_timeout_s`. A store that must open at start (SQLite): StoreError when it cannot
    (the server does not start). Else (PostgreSQL): opened now if it answers, else on a later
    read, and the server starts either way, unless the store refuses it for good (a wrong
    password, no such database, a role that may not create the schema): StoreMisconfigured
    then, so the operator learns it at once, except with `start_without_store`."""
    reader = backend.reader(statement_timeout_s)
    if not backend.starts_without_store:
        # Migrations run before any reader opens: a reader never sees an old schema.
        backend.migrate()
        reader.open()
        return reader
    try:
        reader.open()
    except StoreError as exc:
        if backend.refuses_for_good(exc) and not start_without_store:
            raise StoreMisconfigured(
                f"the store {backend.describe()} refuses this server: {exc}. Fix --store"
                " (TLYTICS_STORE) or the database; --start-without-store starts anyway (events"
                " wait in the spool until the store takes them)"
            ) from exc
        log.warning(
            "store_unavailable_at_start",
            store=backend.describe(),
            error=str(exc),
            hint="events are acknowledged into the spool and written once the store answers",
        )
    return reader


def open_writer(settings: StoreSettings) -> StoreWriter:
    """The chosen store's write side, for the writer alone (its thread or its process); it
    migrates the store as it opens (PostgreSQL may have been down as this server started, so
    its migrations may not have run yet). Opened on first use and, when opening fails, again
    on the next attempt (WriterResources); a PostgreSQL writer replaces a broken connection
    by itself."""
    return open_backend(settings).writer()
