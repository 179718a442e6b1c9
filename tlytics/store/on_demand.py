"""A store reader opened on first use: the server's handlers and its /health probe read
through one, so a store that is down as the server starts (PostgreSQL) or goes down later
answers 503 rather than stopping the server, and a read is never failed by a restart long past.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

import structlog

from tlytics.errors import ReadTimedOut, StoreError, StoreUnavailable
from tlytics.store.base import Queries, StoreReader
from tlytics.store.budget import refuse_if_spent

log = structlog.get_logger("tlytics.store")

T = TypeVar("T")
Args = TypeVarTuple("Args")


def _never(exc: StoreError) -> bool:
    return False


class ReaderOnDemand(StoreReader[Any]):
    """A `StoreReader` opened on first use, and tried again on the next read after opening
    failed (PostgreSQL down as the server started). A failure that `unavailable` recognizes
    is raised as StoreUnavailable (answered 503 with Retry-After, not 500); a read whose
    connection `connection_lost` (PostgreSQL restarted since it was opened: the reader drops
    it) is tried once more, on a new connection, so no read fails for a restart long past.
    A read whose budget is spent before it starts is not started (ReadTimedOut). Thread-safe,
    as a reader must be. The backend (tlytics.store.backend) gives the three functions."""

    def __init__(
        self,
        open_reader: Callable[[], StoreReader[Any]],
        queries: Queries[Any],
        *,
        unavailable: Callable[[StoreError], bool] = _never,
        connection_lost: Callable[[StoreError], bool] = _never,
    ) -> None:
        self.queries = queries
        self._open_reader = open_reader
        self._unavailable = unavailable
        self._connection_lost = connection_lost
        self._reader: StoreReader[Any] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def open(self) -> StoreReader[Any]:
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

    def run(self, fn: Callable[[Any, *Args], T], *args: *Args) -> T:
        refuse_if_spent()
        reader = self.open()
        try:
            return self._translated(lambda: reader.run(fn, *args))
        except StoreError as exc:
            if isinstance(exc, ReadTimedOut) or not self._connection_lost(exc):
                raise
            # Found broken by this read (the reader has dropped it): a read changes nothing,
            # so running it again on a new connection is safe. Once: a store that is really
            # down fails again at once and answers 503.
            log.info("store_connection_replaced", error=str(exc))
            refuse_if_spent()
            return self._translated(lambda: reader.run(fn, *args))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
