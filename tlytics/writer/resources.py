"""What every writer function is given: the store's write side, the spool and the quarantine.

A writer function is a plain module-level function `fn(resources, *args)`; the executor
(thread or process) owns one `WriterResources` and hands it to each call. The store is opened
on first use (the scheduler's first round asks for it, `open_store`), not when the resources
are made: opening can fail while another process holds the store's write lock, or while
PostgreSQL is down, and that must fail one call (tried again) rather than the writer's start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tlytics.spool import Spool
from tlytics.store import StoreWriter


class WriterResources:
    """The writer's resources; used from the writer's one thread or process only."""

    def __init__(
        self,
        spool: Spool,
        quarantine: Spool,
        open_store: Callable[[], StoreWriter],
        *,
        worker_spools: Sequence[Spool] = (),
    ) -> None:
        self.spool = spool
        # The ingest workers' spools (tlytics.writer.spools), drained with `spool`, a batch
        # taking the oldest entries of each in order of arrival (tlytics.writer.drain).
        self.worker_spools = tuple(worker_spools)
        # Spool entries the writer could not read are set aside here, never dropped.
        self.quarantine = quarantine
        self._open_store = open_store
        self._store: StoreWriter | None = None

    @property
    def spools(self) -> tuple[Spool, ...]:
        """Every spool this writer drains."""
        return (self.spool, *self.worker_spools)

    @property
    def store(self) -> StoreWriter:
        """The store's write side, opened on first use."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def close_worker_spools(self) -> None:
        for spool in self.worker_spools:
            spool.close()

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_store(resources: WriterResources) -> None:
    """A writer function: open the store now, if not yet (its opening starts the backfill of
    a newly declared property, see WriteScheduler)."""
    resources.store  # noqa: B018  the property opens it
