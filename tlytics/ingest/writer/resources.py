"""What every writer function is given: the store's write side, the spool and the quarantine.

A writer function is a plain module-level function `fn(resources, *args)`; the executor
(thread or process) owns one `WriterResources` and hands it to each call. The store is opened
on first use, not up front: opening can fail while another process holds the store's write
lock, or while PostgreSQL is down, and that must fail one call (retried with backoff) rather
than the writer's start. With `reopen_store_after_failure` (PostgreSQL), a call that fails on
the store closes it, and the next one opens it afresh: a connection PostgreSQL dropped (a
restart, a failover) is never used again. A SQLite file has no connection to lose, and its
writer keeps what it loaded on open (the erased ids), so it stays open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import structlog

from tlytics.errors import StoreError
from tlytics.spool import Spool
from tlytics.store import StoreWriter

log = structlog.get_logger("tlytics.writer")

T = TypeVar("T")
Args = TypeVarTuple("Args")


class WriterResources:
    """The writer's resources; used from the writer's one thread or process only."""

    def __init__(
        self,
        spool: Spool,
        quarantine: Spool,
        open_store: Callable[[], StoreWriter],
        *,
        reopen_store_after_failure: bool = False,
    ) -> None:
        self.spool = spool
        # Spool entries the writer could not read are set aside here, never dropped.
        self.quarantine = quarantine
        self._open_store = open_store
        self._store: StoreWriter | None = None
        self._reopen_store_after_failure = reopen_store_after_failure

    @property
    def store(self) -> StoreWriter:
        """The store's write side, opened on first use."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def call(self, fn: Callable[[WriterResources, *Args], T], *args: *Args) -> T:
        """`fn(self, *args)`, the way every executor runs a writer function."""
        try:
            return fn(self, *args)
        except StoreError:
            if self._reopen_store_after_failure:
                self._drop_store()
            raise

    def _drop_store(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        try:
            store.close()
        except Exception as exc:  # a broken connection may fail to close too; it is dropped anyway
            log.warning("store_close_failed", error=str(exc))

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
