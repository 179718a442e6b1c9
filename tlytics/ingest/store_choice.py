"""Which store the settings choose, opened for each role: the embedded SQLite file at `--db`,
or PostgreSQL at `--store postgresql://…`, shared by any number of servers.

SQLite is a local file: if it cannot be opened the server does not start. PostgreSQL is a
server of its own that may be down when this one starts or go down later; events are still
acknowledged into the local spool meanwhile. So its reader opens on demand (a read answers 503
until PostgreSQL answers) and the writer opens its store on first use, migrating it, and tries
again after a failure with backoff (see WriteScheduler), so it catches up once PostgreSQL is back.
A PostgreSQL that answers but refuses this server (wrong password, no such database) is not
"down": the server does not start, unless told to (`--start-without-store`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog

from tlytics.errors import ReadTimedOut, StoreError, StoreMisconfigured, StoreUnavailable
from tlytics.ingest.settings import Settings
from tlytics.store import EventFilter, Page, Position, SQLiteReader, StoreReader
from tlytics.store import migrate_store as migrate_sqlite
from tlytics.store.base import Breakdown, UniqueCounts
from tlytics.store.budget import refuse_if_spent

# The writer's store opens in tlytics.store.open; the server's app imports these from here still.
from tlytics.store.open import NODE_NAME_FILE as NODE_NAME_FILE
from tlytics.store.open import node_name as node_name
from tlytics.store.open import open_writer as open_writer

log = structlog.get_logger("tlytics.store")

T = TypeVar("T")

_EVERY_EVENT = EventFilter()


def migrate(settings: Settings) -> None:
    """Bring the chosen store to this version's schema; StoreError when it cannot."""
    if settings.store_url is None:
        migrate_sqlite(settings.db_path, synchronous=settings.spool_sync)
        return
    from tlytics.store.postgres import migrate_postgres

    migrate_postgres(settings.store_url)


def open_reader(settings: Settings) -> ReaderOnDemand:
    """The chosen store's read side for the handlers, migrated first, its reads stopped at
    `--read-timeout` (see tlytics.store.budget). SQLite: StoreError when it cannot be opened
    (the server does not start). PostgreSQL: opened now if it answers, else on a later read, and
    the server starts either way, unless PostgreSQL refuses it for good (a wrong password, no such
    database, a role that may not create the schema): StoreMisconfigured then, so the operator
    learns it at once, except with `--start-without-store`."""
    if settings.store_url is None:
        # Migrations run before any reader opens: a reader never sees an old schema.
        migrate(settings)
        reader = _store_reader(settings, statement_timeout_s=settings.read_timeout_s)
        reader.open()
        return reader
    reader = _store_reader(settings, statement_timeout_s=settings.read_timeout_s)
    try:
        reader.open()
    except StoreError as exc:
        if _refused_for_good(exc) and not settings.start_without_store:
            raise StoreMisconfigured(
                f"the store {settings.store_description} refuses this server: {exc}. Fix --store"
                " (TLYTICS_STORE) or the database; --start-without-store starts anyway (events"
                " wait in the spool until the store takes them)"
            ) from exc
        log.warning(
            "store_unavailable_at_start",
            store=settings.store_description,
            error=str(exc),
            hint="events are acknowledged into the spool and written once the store answers",
        )
    return reader


def open_probe_reader(settings: Settings, *, budget_s: float) -> ReaderOnDemand:
    """A reader of the chosen store apart from the handlers' (its own connection), for /health
    to ask whether the store answers without waiting behind their reads; opened on first use."""
    return _store_reader(settings, statement_timeout_s=budget_s)


def _store_reader(settings: Settings, *, statement_timeout_s: float) -> ReaderOnDemand:
    if settings.store_url is None:
        path = settings.db_path
        # SQLite's read connections stop a read over budget themselves (a progress handler).
        return ReaderOnDemand(lambda: SQLiteReader(path))
    url = settings.store_url

    def open_postgres() -> StoreReader:
        from tlytics.store.postgres import PostgresReader, migrate_postgres
        from tlytics.store.postgres.connection import reader_url

        migrate_postgres(url)
        return PostgresReader(reader_url(url, statement_timeout_s=statement_timeout_s))

    return ReaderOnDemand(open_postgres, unavailable=_postgres_unreachable, connection_lost=_postgres_connection_lost)


def _postgres_unreachable(exc: StoreError) -> bool:
    """Whether `exc` means PostgreSQL cannot be reached now (down, restarting, the connection
    lost) rather than a failed query: psycopg says so by the class of the error underneath."""
    import psycopg

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, StoreUnavailable | psycopg.OperationalError | psycopg.InterfaceError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _postgres_connection_lost(exc: StoreError) -> bool:
    from tlytics.store.postgres.connection import connection_lost

    return connection_lost(exc)


def _refused_for_good(exc: StoreError) -> bool:
    from tlytics.store.postgres.connection import refuses_for_good

    return refuses_for_good(exc)


class ReaderOnDemand:
    """A `StoreReader` opened on first use, and tried again on the next read after opening
    failed (PostgreSQL down as the server started). A failure that `unavailable` recognizes
    is raised as StoreUnavailable (answered 503 with Retry-After, not 500); a read whose
    connection `connection_lost` (PostgreSQL restarted since it was opened: the reader drops
    it) is tried once more, on a new connection, so no read fails for a restart long past.
    A read whose budget is spent before it starts is not started (ReadTimedOut). Thread-safe,
    as a reader must be."""

    def __init__(
        self,
        open_reader: Callable[[], StoreReader],
        *,
        unavailable: Callable[[StoreError], bool] | None = None,
        connection_lost: Callable[[StoreError], bool] | None = None,
    ) -> None:
        self._open_reader = open_reader
        self._unavailable = unavailable or (lambda exc: False)
        self._connection_lost = connection_lost or (lambda exc: False)
        self._reader: StoreReader | None = None
        self._lock = threading.Lock()
        self._closed = False

    def open(self) -> StoreReader:
        """The reader, opening it now if it is not open yet; StoreError when that fails."""
        reader = self._reader
        if reader is not None:
            return reader
        with self._lock:
            if self._closed:
                raise StoreError("the store reader is closed")
            if self._reader is None:
                self._reader = self._translated(self._open_reader)
            return self._reader

    def _translated(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if self._unavailable(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise

    def _read(self, read: Callable[[StoreReader], T]) -> T:
        refuse_if_spent()
        reader = self.open()
        try:
            return self._translated(lambda: read(reader))
        except StoreError as exc:
            if isinstance(exc, ReadTimedOut) or not self._connection_lost(exc):
                raise
            # Found broken by this read (the reader has dropped it): a read changes nothing,
            # so running it again on a new connection is safe. Once: a store that is really
            # down fails again at once and answers 503.
            log.info("store_connection_replaced", error=str(exc))
            refuse_if_spent()
            return self._translated(lambda: read(reader))

    def count(self) -> int:
        return self._read(lambda reader: reader.count())

    def page(
        self,
        page: int,
        page_size: int,
        *,
        where: EventFilter = _EVERY_EVENT,
        after: Position | None = None,
        ascending: bool = False,
    ) -> Page:
        return self._read(lambda reader: reader.page(page, page_size, where=where, after=after, ascending=ascending))

    def keys_summary(self) -> list[tuple[str, int, int, int]]:
        return self._read(lambda reader: reader.keys_summary())

    def bucket_counts(
        self, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
    ) -> list[tuple[int, int | None]]:
        return self._read(lambda reader: reader.bucket_counts(starts_us, end_us, where, unique_path))

    def breakdown(self, where: EventFilter, path: str, limit: int) -> Breakdown:
        return self._read(lambda reader: reader.breakdown(where, path, limit))

    def unique_count(self, where: EventFilter, path: str) -> int:
        return self._read(lambda reader: reader.unique_count(where, path))

    def unique_counts(self, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str) -> UniqueCounts:
        return self._read(lambda reader: reader.unique_counts(starts_us, end_us, where, path))

    def funnel(self, where: EventFilter, steps: Sequence[str], by_path: str, within_us: int) -> list[int]:
        return self._read(lambda reader: reader.funnel(where, steps, by_path, within_us))

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        return self._read(lambda reader: reader.existing_ids(ids))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
