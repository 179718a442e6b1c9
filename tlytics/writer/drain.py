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
from operator import itemgetter

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
_RECEIVED_AT = itemgetter(0)  # of a SpooledRequest
_ROW_RECEIVED_AT = itemgetter(3)  # of a StoreRow


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
    transaction, then remove them; with ingest workers' spools, the oldest of each spool
    together, in order of acknowledgement (see `_acknowledged_first`). Raises on store or
    spool failure, leaving the spools as they were.
    """
    # A batch makes tens of thousands of tuples and keeps them all until it ends: the cyclic
    # garbage collector, set off by their number, ran again and again to find nothing (none
    # of them refers back); it runs when the batch is done instead.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if not resources.worker_spools:
            return _stored(resources, [_read(resources, resources.spool, max_entries, max_events)], ordered=False)
        reads = [_read(resources, spool, max_entries, max_events) for spool in resources.spools]
        return _stored(resources, _acknowledged_first(reads), ordered=True)
    finally:
        if collecting:
            gc.enable()


@dataclass(slots=True)
class _SpoolRead:
    """The oldest entries read from one spool for a batch (those unreadable whole are
    quarantined already)."""

    spool: Spool
    keys: list[int]
    values: list[bytes]
    requests: list[list[SpooledRequest]]  # each entry's readable requests
    # Unreadable requests of group entries whose other requests are stored: quarantined once
    # the store committed the batch (so a store that keeps failing does not quarantine them
    # again at every attempt), just before their entries are removed.
    set_aside: list[_SetAside]
    quarantined: int
    # Every entry of the spool was read (but for what arrived meanwhile).
    caught_up: bool


def _read(resources: WriterResources, spool: Spool, max_entries: int, max_events: int) -> _SpoolRead:
    keys: list[int] = []
    values: list[bytes] = []
    requests: list[list[SpooledRequest]] = []
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
        requests.append(decoded)
        for _received_at, request_events in decoded:
            events += len(request_events)
        if events >= max_events:
            enough_events = True
            break
    caught_up = read < max_entries and not enough_events
    return _SpoolRead(spool, keys, values, requests, set_aside, quarantined, caught_up)


def _latest_received_at(requests: list[SpooledRequest]) -> int | None:
    return max((received_at for received_at, _events in requests), default=None)


def _acknowledged_first(reads: list[_SpoolRead]) -> list[_SpoolRead]:
    """The entries of several spools' reads that can be stored without storing a request
    acknowledged after one still unread ("a second event with the same id is ignored": the
    first acknowledged must be stored first, whichever worker acknowledged it).

    A request sent after another was acknowledged was received after that one's entry was
    committed, so after every entry committed before it in its spool (a spool's order) had
    been received. Of a spool not read to its end, the latest arrival among the entries read
    therefore bounds what may be stored from any spool: only entries received no later (so
    the one that set the bound is stored). The entries kept are stored in order of arrival
    (`_stored`): of two requests with the same id, the one acknowledged first is stored."""
    bounds: list[float] = []
    for read in reads:
        if not read.caught_up:
            latest = max((at for at in map(_latest_received_at, read.requests) if at is not None), default=None)
            bounds.append(float("-inf") if latest is None else latest)
    if not bounds:
        return reads
    bound = min(bounds)
    kept: list[_SpoolRead] = []
    for read in reads:
        # An entry with no readable request (its parts set aside) waits for nothing.
        chosen = [
            index
            for index, latest in enumerate(map(_latest_received_at, read.requests))
            if latest is None or latest <= bound
        ]
        if len(chosen) == len(read.keys):
            kept.append(read)
            continue
        chosen_keys = {read.keys[index] for index in chosen}
        kept.append(
            _SpoolRead(
                read.spool,
                [read.keys[index] for index in chosen],
                [read.values[index] for index in chosen],
                [read.requests[index] for index in chosen],
                [each for each in read.set_aside if each.key in chosen_keys],
                read.quarantined,
                caught_up=False,  # entries wait for the next batch
            )
        )
    return kept


def _stored(resources: WriterResources, reads: list[_SpoolRead], *, ordered: bool) -> DrainResult:
    """Store the reads' entries in one transaction (in order of arrival if `ordered`), then
    quarantine what was set aside and remove the entries from their spools."""
    requests = [request for read in reads for entry in read.requests for request in entry]
    if ordered:
        requests.sort(key=_RECEIVED_AT)  # stable: a spool's own order among equals
    events = sum(len(request_events) for _received_at, request_events in requests)
    set_aside = [each for read in reads for each in read.set_aside]
    inserted = 0
    if events:
        try:
            inserted = resources.store.insert(SpooledRows(requests))
        except UnconvertibleRow:  # nothing written: convert request by request, setting aside those that fail
            rows: list[StoreRow] = []
            set_aside = []
            for read in reads:
                spool_rows, spool_set_aside = _store_rows(read.spool, read.keys, read.values)
                rows.extend(spool_rows)
                set_aside.extend(spool_set_aside)
            if ordered:
                rows.sort(key=_ROW_RECEIVED_AT)
            events = len(rows)
            inserted = resources.store.insert(rows) if rows else 0
    quarantined = sum(read.quarantined for read in reads)
    if set_aside:
        _quarantine_parts(resources, set_aside)
        quarantined += len(set_aside)
    for read in reads:
        if read.keys:
            read.spool.remove(read.keys)
        # The server's appends leave checkpoints to the writer (Spool checkpoint_on_append),
        # off the event loop: after each batch, and when drained, so the spool's WAL shrinks
        # back. Checkpointing only once caught up was measured: fewer instructions, but
        # 1.05-1.21x the CPU per entry (a longer WAL makes every page read of the spool
        # dearer). What cost was the number of batches (see the scheduler's CATCH_UP_PAUSE_S).
        if read.keys or not read.quarantined:
            read.spool.checkpoint()
    # An entry all of whose requests were set aside counts as quarantined, not as drained.
    emptied = {(unreadable.spool, unreadable.key) for unreadable in set_aside if unreadable.whole}
    return DrainResult(
        entries=sum(len(read.keys) for read in reads) - len(emptied),
        events=events,
        inserted=inserted,
        quarantined=quarantined,
        pid=os.getpid(),
        caught_up=all(read.caught_up for read in reads),
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
