"""Retention: events older than the retention period (by timestamp) are deleted in the
background, in small transactions so ingest never waits long for the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from tlytics.store import EventFilter
from tlytics.writer.executor import WriteExecutor
from tlytics.writer.resources import WriterResources

log = structlog.get_logger("tlytics.writer")

RETENTION_CHUNK = 2_000
# Chunks per round at most; the next round continues where this one stopped.
_MAX_CHUNKS_PER_ROUND = 1_000


def delete_expired(resources: WriterResources, cutoff_us: int, max_rows: int) -> int:
    """Delete up to `max_rows` events with a timestamp before `cutoff_us`; return how many."""
    return resources.store.delete_matching(EventFilter(until_us=cutoff_us), max_rows=max_rows, remember_ids=False)


async def apply_retention(executor: WriteExecutor, retention_s: float, *, stopping: Callable[[], bool]) -> None:
    """One round of retention, chunk by chunk, until nothing is left to delete, the round's
    bound is reached or `stopping()`. A failure is logged; the next round tries again."""
    cutoff_us = int((time.time() - retention_s) * 1_000_000)
    deleted = 0
    try:
        for _ in range(_MAX_CHUNKS_PER_ROUND):
            chunk = await executor.execute(delete_expired, cutoff_us, RETENTION_CHUNK)
            deleted += chunk
            if chunk < RETENTION_CHUNK or stopping():
                break
            await asyncio.sleep(0)
    except Exception as exc:
        log.error("retention_failed", error=str(exc))
    if deleted:
        log.info("retention_deleted", events=deleted, older_than_s=retention_s)
