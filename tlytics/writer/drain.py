"""Draining: the writer function that moves the oldest spool entries into the store.

Spool entries are removed only after the store committed their events, so a crash between the
two replays them, and the unique id makes the replay harmless. An entry that cannot be decoded
is moved to the quarantine (kept for a person to look at) instead of wedging the queue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import structlog

from tlytics.spool.entry import store_rows
from tlytics.store import StoreRow
from tlytics.writer.resources import WriterResources

log = structlog.get_logger("tlytics.writer")


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What one drained batch did."""

    entries: int
    events: int
    inserted: int
    quarantined: int
    pid: int = 0  # the process that did the work


def drain_batch(resources: WriterResources, max_entries: int, max_events: int) -> DrainResult:
    """Move the oldest spool entries (up to `max_events` events) into the store in one
    transaction, then remove them. Raises on store or spool failure, leaving the spool as it was.
    """
    spool = resources.spool
    keys: list[int] = []
    rows: list[StoreRow] = []
    quarantined = 0
    for key, value in spool.iter_oldest(max_entries):
        try:
            entry_rows = store_rows(value)
        except (ValueError, TypeError, KeyError) as exc:
            resources.quarantine.append(value)
            spool.remove([key])
            quarantined += 1
            log.error("spool_entry_quarantined", spool_key=key, error=str(exc), bytes=len(value))
            continue
        keys.append(key)
        rows.extend(entry_rows)
        if len(rows) >= max_events:
            break
    inserted = resources.store.insert(rows) if rows else 0
    if keys:
        spool.remove(keys)
    # The server's appends leave checkpoints to the writer (Spool checkpoint_on_append), off
    # the event loop: after each batch, and when drained, so the spool's WAL shrinks back.
    if keys or not quarantined:
        spool.checkpoint()
    return DrainResult(entries=len(keys), events=len(rows), inserted=inserted, quarantined=quarantined, pid=os.getpid())
