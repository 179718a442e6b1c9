"""Draining: the writer function that moves the oldest spool entries into the store.

Spool entries are removed only after the store committed their events, so a crash between the
two replays them, and the unique id makes the replay harmless. An entry that cannot be decoded
is moved to the quarantine (kept for a person to look at) instead of wedging the queue; in a
group entry (the requests of one group commit), only the requests that cannot be read are.

The store is handed the decoded entries as `SpooledRows` (SQLite binds them as they are; other
stores read them as the usual store rows). When an event's row cannot be made, the batch is
converted request by request instead, and the request that fails is quarantined, as always.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, replace

import structlog

from tlytics.spool import Spool
from tlytics.spool.entry import SpooledRequest, decode_spool_requests, spool_entry_parts, store_rows
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


def _decoded(value: bytes) -> list[SpooledRequest]:
    """The requests of a spool entry (either kind: see tlytics.spool.entry); ValueError when
    their store rows could not be made (`store_rows`): the decoder does not look inside the raw
    data, so the entry's text is checked to be UTF-8 here, once (`isascii` is the usual, quick
    answer)."""
    decoded = decode_spool_requests(value)
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
    requests: list[SpooledRequest] = []
    # Unreadable requests of group entries whose other requests are stored: quarantined once
    # the store committed the batch (so a store that keeps failing does not quarantine them
    # again at every attempt), just before their entries are removed.
    set_aside: list[_SetAside] = []
    events = quarantined = read = 0
    enough_events = False
    for key, value in spool.iter_oldest(max_entries):
        read += 1
        try:
            decoded = _decoded(value)
        except _UNREADABLE as exc:
            split = _split_group(spool, key, value)
            if split is None:  # not a group entry: set aside whole, as it is
                _quarantine(resources, spool, key, value, exc)
                quarantined += 1
                continue
            decoded, unreadable = split
            set_aside.extend(unreadable)
        keys.append(key)
        values.append(value)
        requests.extend(decoded)
        for _received_at, request_events in decoded:
            events += len(request_events)
        if events >= max_events:
            enough_events = True
            break
    inserted = 0
    if events:
        try:
            inserted = resources.store.insert(SpooledRows(requests))
        except UnconvertibleRow:  # nothing written: convert request by request, setting aside those that fail
            rows, set_aside = _store_rows(spool, keys, values)
            events = len(rows)
            inserted = resources.store.insert(rows) if rows else 0
    if set_aside:
        _quarantine_parts(resources, set_aside)
        quarantined += len(set_aside)
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
    # An entry all of whose requests were set aside counts as quarantined, not as drained.
    emptied = {unreadable.key for unreadable in set_aside if unreadable.whole}
    return DrainResult(
        entries=len(keys) - len(emptied),
        events=events,
        inserted=inserted,
        quarantined=quarantined,
        pid=os.getpid(),
        caught_up=caught_up,
    )


@dataclass(frozen=True, slots=True)
class _SetAside:
    """One request's entry, out of a group entry, that cannot be stored."""

    spool: str
    key: int
    position: int
    part: bytes
    error: str
    whole: bool = False  # nothing else of its spool entry is stored: the entry counts as quarantined


def _split_group(spool: Spool, key: int, value: bytes) -> tuple[list[SpooledRequest], list[_SetAside]] | None:
    """The readable requests of an unreadable group entry, and those set aside; None when
    `value` is not a group entry (or not JSON), to be set aside whole."""
    try:
        parts = spool_entry_parts(value)
    except ValueError:
        return None
    if len(parts) == 1 and parts[0] is value:
        return None
    readable: list[SpooledRequest] = []
    unreadable: list[_SetAside] = []
    for position, part in enumerate(parts):
        try:
            readable.extend(_decoded(part))
        except _UNREADABLE as exc:
            unreadable.append(_SetAside(str(spool.directory), key, position, part, str(exc), whole=False))
    if not readable:
        unreadable = [replace(each, whole=True) for each in unreadable]
    return readable, unreadable


def _store_rows(spool: Spool, keys: list[int], values: list[bytes]) -> tuple[list[StoreRow], list[_SetAside]]:
    """The store rows of entries converted in Python, request by request; those that cannot
    be are set aside (a request's entry that is a whole spool entry too: the quarantine then
    holds it as it was)."""
    rows: list[StoreRow] = []
    set_aside: list[_SetAside] = []
    for key, value in zip(keys, values, strict=True):
        try:
            parts = spool_entry_parts(value)
        except ValueError as exc:
            set_aside.append(_SetAside(str(spool.directory), key, 0, value, str(exc), whole=True))
            continue
        stored_before, unreadable = len(rows), []
        for position, part in enumerate(parts):
            try:
                rows.extend(store_rows(part))
            except _UNREADABLE as exc:
                unreadable.append(_SetAside(str(spool.directory), key, position, part, str(exc)))
        whole = len(rows) == stored_before
        set_aside.extend(replace(each, whole=whole) for each in unreadable)
    return rows, set_aside


def _quarantine_parts(resources: WriterResources, set_aside: list[_SetAside]) -> None:
    resources.quarantine.append_many([unreadable.part for unreadable in set_aside])
    for unreadable in set_aside:
        log.error(
            "spool_entry_quarantined",
            spool=unreadable.spool,
            spool_key=unreadable.key,
            request=unreadable.position,
            error=unreadable.error,
            bytes=len(unreadable.part),
        )


def _quarantine(resources: WriterResources, spool: Spool, key: int, value: bytes, exc: Exception) -> None:
    resources.quarantine.append(value)
    spool.remove([key])
    log.error("spool_entry_quarantined", spool=str(spool.directory), spool_key=key, error=str(exc), bytes=len(value))
