"""Draining: the writer function that moves the oldest spool entries into the store.

Spool entries are removed only after the store committed their events, so a crash between the
two replays them, and the unique id makes the replay harmless. An entry that cannot be decoded
is moved to the quarantine (kept for a person to look at) instead of wedging the queue.

The store is handed the decoded entries as `SpooledRows` (SQLite binds them as they are; other
stores read them as the usual store rows). When an event's row cannot be made, the batch is
converted entry by entry instead, and the entry that fails is quarantined, as always.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import structlog

from tlytics.spool import Spool
from tlytics.spool.entry import SpoolRow, decode_spool_entry, store_rows
from tlytics.store import StoreRow
from tlytics.store.spooled_rows import SpooledRows, UnconvertibleRow
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
    # Every spool held less than a batch (so it was drained, but for what arrived meanwhile).
    caught_up: bool = True


_UNREADABLE = (ValueError, TypeError, KeyError)


def _decoded(value: bytes) -> tuple[int, list[SpoolRow]]:
    """(received_at µs, events) of a spool entry; ValueError when its events' store rows could
    not be made (`store_rows`): the decoder does not look inside the raw data, so the
    entry's text is checked to be UTF-8 here, once (`isascii` is the usual, quick answer)."""
    decoded = decode_spool_entry(value)
    if not value.isascii():
        value.decode()
    return decoded


def drain_batch(resources: WriterResources, max_entries: int, max_events: int) -> DrainResult:
    """Move the oldest spool entries (up to `max_events` events) into the store in one
    transaction, then remove them; likewise for each ingest worker's spool (a transaction
    each). Raises on store or spool failure, leaving the spool being drained as it was.
    """
    # A batch makes tens of thousands of tuples and keeps them all until it ends: the cyclic
    # garbage collector, set off by their number, ran again and again to find nothing (none
    # of them refers back); it runs when the batch is done instead.
    collecting = gc.isenabled()
    gc.disable()
    try:
        result = _drain(resources, resources.spool, max_entries, max_events)
        for spool in resources.worker_spools:
            more = _drain(resources, spool, max_entries, max_events)
            result = DrainResult(
                entries=result.entries + more.entries,
                events=result.events + more.events,
                inserted=result.inserted + more.inserted,
                quarantined=result.quarantined + more.quarantined,
                pid=result.pid,
                caught_up=result.caught_up and more.caught_up,
            )
        return result
    finally:
        if collecting:
            gc.enable()


def _drain(resources: WriterResources, spool: Spool, max_entries: int, max_events: int) -> DrainResult:
    keys: list[int] = []
    values: list[bytes] = []
    entries: list[tuple[int, list[SpoolRow]]] = []
    events = quarantined = read = 0
    enough_events = False
    for key, value in spool.iter_oldest(max_entries):
        read += 1
        try:
            entry = _decoded(value)
        except _UNREADABLE as exc:
            _quarantine(resources, spool, key, value, exc)
            quarantined += 1
            continue
        keys.append(key)
        values.append(value)
        entries.append(entry)
        events += len(entry[1])
        if events >= max_events:
            enough_events = True
            break
    inserted = 0
    if events:
        try:
            inserted = resources.store.insert(SpooledRows(entries))
        except UnconvertibleRow:  # nothing written: convert entry by entry, quarantining those that fail
            keys, rows, unconvertible = _store_rows(resources, spool, keys, values)
            quarantined += unconvertible
            events = len(rows)
            inserted = resources.store.insert(rows) if rows else 0
    if keys:
        spool.remove(keys)
    # The server's appends leave checkpoints to the writer (Spool checkpoint_on_append), off
    # the event loop: after each batch, and when drained, so the spool's WAL shrinks back.
    # Checkpointing only once caught up was measured: fewer instructions, but 1.05-1.21x the
    # CPU per entry (a longer WAL makes every page read of the spool dearer). What cost was the
    # number of batches (see the scheduler's CATCH_UP_PAUSE_S).
    if keys or not quarantined:
        spool.checkpoint()
    caught_up = read < max_entries and not enough_events
    return DrainResult(
        entries=len(keys),
        events=events,
        inserted=inserted,
        quarantined=quarantined,
        pid=os.getpid(),
        caught_up=caught_up,
    )


def _store_rows(
    resources: WriterResources, spool: Spool, keys: list[int], values: list[bytes]
) -> tuple[list[int], list[StoreRow], int]:
    """The store rows of entries converted in Python; those that cannot be are quarantined.
    Returns the keys converted, their rows, and how many were quarantined."""
    converted: list[int] = []
    rows: list[StoreRow] = []
    quarantined = 0
    for key, value in zip(keys, values, strict=True):
        try:
            rows.extend(store_rows(value))
        except _UNREADABLE as exc:
            _quarantine(resources, spool, key, value, exc)
            quarantined += 1
            continue
        converted.append(key)
    return converted, rows, quarantined


def _quarantine(resources: WriterResources, spool: Spool, key: int, value: bytes, exc: Exception) -> None:
    resources.quarantine.append(value)
    spool.remove([key])
    log.error("spool_entry_quarantined", spool=str(spool.directory), spool_key=key, error=str(exc), bytes=len(value))
