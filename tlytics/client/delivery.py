"""Delivering events to the server, whatever it answers: the rules of one batch's fate.

Requests stay within `Config.max_batch_bytes` and `max_batch`, and within what the server said
its limits are: a 413 carries `limit` (events per request, or bytes per body), which is
learned once, for every later batch (`LearnedLimits`); a 413 without a usable limit halves the
batch. A 400 or 413 naming an `index` sets aside that event only and sends the rest again at
once; any other 4xx sets aside the batch. Set aside means moved to the dead-letter spool,
reported, counted in the stats, and never blocking the queue behind it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.prepare import dumps_exact, loads_exact
from tlytics.client.transport import BaseTransport, Outcome, Reply, classify
from tlytics.errors import EventsRejected, TlyticsError, stated_limit

log = logging.getLogger("tlytics.client")


@dataclass
class SenderStats:
    """What the sender did; `dead_lettered` and `last_rejection` say why a flush() was False."""

    delivered: int = 0
    requests: int = 0
    retries: int = 0
    dead_lettered: int = 0
    dropped: int = 0  # events the client could neither spool nor keep in memory
    last_error: str | None = None
    # Why events were last set aside; unlike last_error, not cleared by a later delivery.
    last_rejection: str | None = None
    # The last attempt found no server at all (refused, unknown host): flush() stops waiting.
    server_unreachable: bool = False
    # Delivery attempts finished, whatever their outcome: lets flush() see a fresh one.
    attempts: int = 0
    # Events before_send dropped on purpose (returned None): not lost, not in `dropped`.
    filtered: int = 0
    # Events dropped because before_send raised or returned something else than an Event.
    before_send_failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def given_up(self) -> int:
        """Events this process gave up on: set aside (dead-lettered) or dropped. (An event a
        failing before_send dropped never entered the pipeline: counted apart, reported.)"""
        with self.lock:
            return self.dead_lettered + self.dropped


class LearnedLimits:
    """The server's limits as its 413 answers stated them: kept for the process's lifetime, so
    each later batch is cut to size before it is sent instead of being refused again."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes

    def learn(self, answer: Any) -> bool:
        """Take the `limit` of a 413 answer; True when it lowered a limit."""
        stated = stated_limit(answer)
        if stated is None:
            return False
        limit, limit_of = stated
        if limit_of is None:
            # A server from before `limit_of`: what the limit counts, read from its message.
            error = str(answer.get("error", ""))
            if "events" in error and "bytes" not in error:  # "too many events in one request"
                limit_of = "events_per_request"
            elif "body" in error:  # "request body is larger than N bytes"
                limit_of = "bytes_per_body"
        if limit_of == "events_per_request":
            if limit < self.max_events:
                self.max_events = limit
                log.info("client_learned_server_limit max_events=%d", limit)
                return True
        elif limit_of == "bytes_per_body" and limit < self.max_bytes:
            self.max_bytes = limit
            log.info("client_learned_server_limit max_bytes=%d", limit)
            return True
        return False


def dead_letter_record(reply: Reply, events: list[Any]) -> bytes:
    return dumps_exact({"status": reply.status, "answer": reply.json(), "failed_at": time.time(), "events": events})


# b'{"events":' + array + b"}"
_BODY_OVERHEAD_BYTES = 11


def split_by_size(events: list[Any], max_batch_bytes: int) -> list[list[Any]]:
    """`events` in order, in batches whose request body stays within `max_batch_bytes`
    (JSON, before compression); an event too big for any batch goes alone."""
    batches: list[list[Any]] = []
    batch: list[Any] = []
    size = _BODY_OVERHEAD_BYTES + 1  # the array's brackets
    for event in events:
        event_size = len(dumps_exact(event)) + 1  # and its comma
        if batch and size + event_size > max_batch_bytes:
            batches.append(batch)
            batch, size = [], _BODY_OVERHEAD_BYTES + 1
        batch.append(event)
        size += event_size
    if batch:
        batches.append(batch)
    return batches


# Where an event starts in a spool entry: the client writes each as {"id":"<uuid>","key":…
# (see client._event_dict). Counting these instead of decoding the entry keeps the sender's
# cost per event low. Nested data could only make the count too high (smaller requests, never
# larger than max_batch); an entry without any (not written by this client) is decoded.
_EVENT_START = re.compile(rb'\{"id":"[0-9a-fA-F-]{36}","key":"')


def entry_event_count(entry: bytes) -> int:
    """How many events a spool entry holds (at least; see _EVENT_START)."""
    count = len(_EVENT_START.findall(entry))
    return count if count else len(loads_exact(entry))


def joined_entries(entries: list[bytes]) -> bytes:
    """The JSON array of every event in `entries` (each a JSON array), without decoding them."""
    if len(entries) == 1:
        return entries[0]
    return b"[" + b",".join(entry[1:-1] for entry in entries if entry != b"[]") + b"]"


def _too_big(event_count: int, body_bytes: int, limits: LearnedLimits) -> bool:
    return event_count > limits.max_events or body_bytes + _BODY_OVERHEAD_BYTES > limits.max_bytes


def deliver_entries(
    transport: BaseTransport,
    entries: list[bytes],
    dead_letter: ForkSafeSpool,
    report: Callable[[TlyticsError], None],
    stats: SenderStats,
    limits: LearnedLimits,
) -> Reply:
    """deliver() for spool entries, posting their bytes as they are: in the usual cases (the
    server takes the batch, or asks to retry later) nothing is decoded and encoded again.
    Only a batch too big for one request, or one the server refuses, is decoded and handed
    to deliver(), with the answer already received."""
    body = joined_entries(entries)
    if _too_big(sum(entry_event_count(entry) for entry in entries), len(body), limits):
        return deliver(transport, loads_exact(body), dead_letter, report, stats, limits)
    reply = transport.post_batch(body)
    outcome = classify(reply.status)
    if outcome is Outcome.REJECTED:
        return deliver(transport, loads_exact(body), dead_letter, report, stats, limits, answered=reply)
    with stats.lock:
        stats.requests += 1
    if outcome is Outcome.DELIVERED:
        answer = reply.json()
        count = answer.get("count") if isinstance(answer, dict) else None
        with stats.lock:
            stats.delivered += count if isinstance(count, int) else len(loads_exact(body))
    return reply


def _cut_to_limits(batch: list[Any], limits: LearnedLimits) -> list[list[Any]]:
    """`batch` in order, in pieces within the limits (a piece of one event may still be too
    big: the server then names it, and it alone is set aside)."""
    by_count = [batch[start : start + limits.max_events] for start in range(0, len(batch), limits.max_events)]
    return [piece for part in by_count for piece in split_by_size(part, limits.max_bytes)]


def deliver(
    transport: BaseTransport,
    events: list[Any],
    dead_letter: ForkSafeSpool,
    report: Callable[[TlyticsError], None],
    stats: SenderStats,
    limits: LearnedLimits,
    *,
    answered: Reply | None = None,
) -> Reply:
    """Post `events` until the server takes them or a retryable answer comes back.

    Requests stay within `limits`. A 413 stating a `limit` lowers `limits` and cuts the batch
    to it; one without a usable limit halves the batch, down to one event; a 400 or 413
    naming an `index` sets aside that event only; any other 4xx sets aside the batch.

    `answered` is the server's answer to `events` already posted as one request (by
    deliver_entries): it stands for the first request.

    Returns the last reply: DELIVERED (possibly after setting rejected events aside) or RETRY.
    Raises DeliveryError on connection trouble.
    """
    pending: list[list[Any]] = [list(events)]
    last: Reply = Reply(200, {}, b"{}")  # nothing to send is settled, like a delivery
    while pending:
        batch = pending.pop(0)
        if answered is not None:
            reply, answered = answered, None
        else:
            body = dumps_exact(batch)
            if len(batch) > 1 and _too_big(len(batch), len(body), limits):
                pending[0:0] = _cut_to_limits(batch, limits)
                continue
            reply = transport.post_batch(body)
        with stats.lock:
            stats.requests += 1
        outcome = classify(reply.status)
        if outcome is Outcome.DELIVERED:
            with stats.lock:
                stats.delivered += len(batch)
            last = reply
            continue
        if outcome is Outcome.RETRY:
            return reply
        answer = reply.json()
        index = answer.get("index") if isinstance(answer, dict) else None
        if isinstance(index, int) and 0 <= index < len(batch) and reply.status in (400, 413):
            rejected = [batch.pop(index)]
            if batch:
                pending.insert(0, batch)
        elif reply.status == 413 and len(batch) > 1:
            if not limits.learn(answer):
                # No limit stated (or none lower than what we keep to): halve the batch.
                middle = len(batch) // 2
                pending[0:0] = [batch[:middle], batch[middle:]]
                continue
            pending[0:0] = _cut_to_limits(batch, limits)
            continue
        else:
            rejected = batch
        dead_letter.append(dead_letter_record(reply, rejected))
        message = f"server rejected {len(rejected)} event(s) with {reply.status}: {answer}"
        with stats.lock:
            stats.dead_lettered += len(rejected)
            stats.last_rejection = message
        log.error("events_dead_lettered status=%s events=%d answer=%s", reply.status, len(rejected), answer)
        report(EventsRejected(message, status=reply.status, events=rejected))
    return last
