"""Erasure: deleting matching events for good, chunk by chunk, with their ids remembered so
a retry or a replay of an erased event is never stored again."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from tlytics.errors import StoreError
from tlytics.store import EventFilter
from tlytics.writer.executor import WriteExecutor
from tlytics.writer.resources import WriterResources

ERASE_CHUNK = 5_000


class ErasureIncomplete(StoreError):
    """An erasure stopped early: `deleted` events were erased for good, the others not yet."""

    def __init__(self, message: str, *, deleted: int) -> None:
        super().__init__(message)
        self.deleted = deleted


def erase_chunk(resources: WriterResources, where: EventFilter, max_rows: int) -> int:
    """Erase up to `max_rows` events matching `where` in one transaction; return how many."""
    return resources.store.delete_matching(where, max_rows=max_rows, remember_ids=True)


async def erase_stored(executor: WriteExecutor, where: EventFilter) -> int:
    """Erase every stored event matching `where`; return how many. Raises ErasureIncomplete
    (saying how many were erased) when a chunk fails: a retry finishes the job."""
    deleted = 0
    while True:
        try:
            chunk = await executor.execute(erase_chunk, where, ERASE_CHUNK)
        except (StoreError, BrokenProcessPool) as exc:
            raise ErasureIncomplete(f"deleting failed: {exc}", deleted=deleted) from exc
        deleted += chunk
        if chunk < ERASE_CHUNK:
            return deleted
