"""Which store the settings choose, opened for each role: the embedded SQLite file at `--db`,
or PostgreSQL at `--store postgresql://…`, shared by any number of servers.

SQLite is a local file: if it cannot be opened the server does not start. PostgreSQL is a
server of its own that may be down when this one starts or go down later; events are still
acknowledged into the local spool meanwhile. So its reader opens on demand (a read answers 503
until PostgreSQL answers) and the writer opens its store on first use, migrating it, and tries
again after a failure with backoff (see WriteScheduler), so it catches up once PostgreSQL is back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog

from tlytics.errors import StoreError, StoreUnavailable
from tlytics.ingest.settings import Settings
from tlytics.store import EventFilter, Page, Position, SQLiteReader, StoreReader
from tlytics.store import migrate_store as migrate_sqlite
from tlytics.store.base import Breakdown, UniqueCounts

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


def open_reader(settings: Settings) -> StoreReader:
    """The chosen store's read side, migrated first. SQLite: StoreError when it cannot be
    opened (the server does not start). PostgreSQL: opened now if it answers, else on a later
    read; the server starts either way."""
    if settings.store_url is None:
        # Migrations run before any reader opens: a reader never sees an old schema.
        migrate(settings)
        return SQLiteReader(settings.db_path)
    url = settings.store_url

    def open_postgres() -> StoreReader:
        from tlytics.store.postgres import PostgresReader, migrate_postgres

        migrate_postgres(url)
        return PostgresReader(url)

    reader = ReaderOnDemand(open_postgres, unavailable=_postgres_unreachable)
    try:
        reader.open()
    except StoreError as exc:
        log.warning(
            "store_unavailable_at_start",
            store=settings.store_description,
            error=str(exc),
            hint="events are acknowledged into the spool and written once the store answers",
        )
    return reader


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


class ReaderOnDemand:
    """A `StoreReader` opened on first use, and tried again on the next read after opening
    failed (PostgreSQL down as the server started). A failure that `unavailable` recognizes
    is raised as StoreUnavailable (answered 503 with Retry-After, not 500). Thread-safe, as a
    reader must be."""

    def __init__(
        self, open_reader: Callable[[], StoreReader], *, unavailable: Callable[[StoreError], bool] | None = None
    ) -> None:
        self._open_reader = open_reader
        self._unavailable = unavailable or (lambda exc: False)
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
        reader = self.open()
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
