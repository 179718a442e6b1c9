"""The background sender: ships spooled events in batches and removes them only after a 200.

Connection errors, timeouts, 408/429/5xx are retried with capped exponential backoff and
jitter (a `Retry-After` is honoured); connection refused or an unknown host is reported as
`server_unreachable` so flush() need not wait for it. Requests stay within
`Config.max_batch_bytes`, and a 413 without an `index` splits the batch in two. Other 4xx
answers mean the batch will never be accepted: when the server names the bad event (`index`,
on a 400 or 413), only that event is set aside and the rest are sent again at once; otherwise
the batch is set aside. Set aside means moved to the dead-letter spool, reported, counted in
the stats, and never blocking the queue behind it.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from tlytics.client.config import Config, seconds
from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.lease import SenderLease
from tlytics.client.transport import Outcome, Reply, Transport, backoff_delay_s, classify, retry_after_s
from tlytics.errors import DeliveryError, EventsRejected, ServerUnreachable, TlyticsError

log = logging.getLogger("tlytics.client")


# The shortest wait of an idle sender: emitted events reach the disk every spool_interval
# (50 ms by default) anyway, and max_batch waiting or a flush() wakes it at once.
MIN_IDLE_WAIT_S = 0.05


class Step(Enum):
    """What one Sender.step did."""

    SENT = "sent"  # a batch was delivered: go on at once
    IDLE = "idle"  # nothing to send (or not ours to send): wait for a wake-up or flush_period
    RETRY = "retry"  # failed: wait the backoff, unless a flush() wakes the sender
    WAIT = "wait"  # failed, and the server (Retry-After) or the spool asks for a fixed wait


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


def dead_letter_record(reply: Reply, events: list[Any]) -> bytes:
    return orjson.dumps({"status": reply.status, "answer": reply.json(), "failed_at": time.time(), "events": events})


# b'{"events":' + array + b"}"
_BODY_OVERHEAD_BYTES = 11


def split_by_size(events: list[Any], max_batch_bytes: int) -> list[list[Any]]:
    """`events` in order, in batches whose request body stays within `max_batch_bytes`
    (JSON, before compression); an event too big for any batch goes alone."""
    batches: list[list[Any]] = []
    batch: list[Any] = []
    size = _BODY_OVERHEAD_BYTES + 1  # the array's brackets
    for event in events:
        event_size = len(orjson.dumps(event)) + 1  # and its comma
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
    return count if count else len(orjson.loads(entry))


def joined_entries(entries: list[bytes]) -> bytes:
    """The JSON array of every event in `entries` (each a JSON array), without decoding them."""
    if len(entries) == 1:
        return entries[0]
    return b"[" + b",".join(entry[1:-1] for entry in entries if entry != b"[]") + b"]"


def deliver_entries(
    transport: Transport,
    entries: list[bytes],
    dead_letter: ForkSafeSpool,
    report: Callable[[TlyticsError], None],
    stats: SenderStats,
    *,
    max_batch_bytes: int,
) -> Reply:
    """deliver() for spool entries, posting their bytes as they are: in the usual cases (the
    server takes the batch, or asks to retry later) nothing is decoded and encoded again.
    Only a batch too big for one request, or one the server refuses, is decoded and handed
    to deliver(), with the answer already received."""
    body = joined_entries(entries)
    if len(body) + _BODY_OVERHEAD_BYTES > max_batch_bytes:
        return deliver(transport, orjson.loads(body), dead_letter, report, stats, max_batch_bytes=max_batch_bytes)
    reply = transport.post_batch(body)
    outcome = classify(reply.status)
    if outcome is Outcome.REJECTED:
        return deliver(
            transport, orjson.loads(body), dead_letter, report, stats, max_batch_bytes=max_batch_bytes, answered=reply
        )
    with stats.lock:
        stats.requests += 1
    if outcome is Outcome.DELIVERED:
        answer = reply.json()
        count = answer.get("count") if isinstance(answer, dict) else None
        with stats.lock:
            stats.delivered += count if isinstance(count, int) else len(orjson.loads(body))
    return reply


def deliver(
    transport: Transport,
    events: list[Any],
    dead_letter: ForkSafeSpool,
    report: Callable[[TlyticsError], None],
    stats: SenderStats,
    *,
    max_batch_bytes: int | None = None,
    answered: Reply | None = None,
) -> Reply:
    """Post `events` until the server takes them or a retryable answer comes back.

    Requests stay within `max_batch_bytes`. A 413 without an `index` (the batch is too big
    for this server) splits the batch in two, down to one event; a 400 or 413 naming an
    `index` sets aside that event only; any other 4xx sets aside the batch.

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
            body = orjson.dumps(batch)
            if max_batch_bytes is not None and len(batch) > 1 and len(body) + _BODY_OVERHEAD_BYTES > max_batch_bytes:
                pending[0:0] = split_by_size(batch, max_batch_bytes)
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
            # Too big for this server as a whole (its limit may be below ours): halve it.
            middle = len(batch) // 2
            pending[0:0] = [batch[:middle], batch[middle:]]
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


def _delivered(in_flight: Future[Reply]) -> bool:
    """Whether the request behind `in_flight` was delivered; waits for its answer (bounded by
    the transport's timeout). A connection failure there counts as not delivered."""
    try:
        return classify(in_flight.result().status) is Outcome.DELIVERED
    except DeliveryError:
        return False


class SecondRequest:
    """A second connection, and a daemon thread posting on it, so the sender keeps two requests
    in flight. A daemon, like the sender thread: a request to a server that hangs must never
    hold up the application's exit (flush_at_exit bounds that)."""

    def __init__(self, config: Config, deliver: Callable[[Transport, list[bytes]], Reply]) -> None:
        self._transport = Transport.for_config(config)
        self._deliver = deliver
        self._jobs: queue.SimpleQueue[tuple[list[bytes], Future[Reply]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="tlytics-sender-second", daemon=True).start()

    def post(self, entries: list[bytes]) -> Future[Reply]:
        future: Future[Reply] = Future()
        self._jobs.put((entries, future))
        return future

    def close(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                entries, future = job
                try:
                    future.set_result(self._deliver(self._transport, entries))
                except BaseException as exc:  # handed to the sender thread, which waits on it
                    future.set_exception(exc)
        finally:
            self._transport.close()


class Sender:
    """The body of the sender thread for one Client in one process."""

    def __init__(
        self,
        *,
        spool: ForkSafeSpool,
        dead_letter: ForkSafeSpool,
        config: Config,
        lease: SenderLease,
        report: Callable[[TlyticsError], None],
        wake: threading.Event,
        stop: threading.Event,
        progress: threading.Condition,
        stats: SenderStats,
    ) -> None:
        self._spool = spool
        self._dead_letter = dead_letter
        self._config = config
        self._lease = lease
        self._report = report
        self._wake = wake
        self._stop = stop
        self._progress = progress
        self._stats = stats
        # An idle sender waits at least MIN_IDLE_WAIT_S: flush_period=0 (send at once) made
        # it poll an empty spool in a loop, most of a core for nothing.
        self._flush_period_s = max(seconds(config.flush_period), MIN_IDLE_WAIT_S)
        self._attempt = 0  # failed attempts in a row, for the backoff

    def _next_batch(self, after: int = -1) -> tuple[list[int], list[bytes]]:
        """The oldest spool entries (with keys above `after`) that fit one request: their keys
        and their bytes."""
        keys: list[int] = []
        entries: list[bytes] = []
        unreadable: list[tuple[int, bytes]] = []
        size_bytes = 0
        event_count = 0
        with self._spool.locked() as spool:
            # Lazily, oldest first, and only as many entries as one request takes.
            for key, value in spool.iter_oldest(self._config.max_batch, after=after):
                try:
                    if value[:1] != b"[" or value[-1:] != b"]":
                        raise orjson.JSONDecodeError("not a JSON array", value.decode("utf-8", "replace"), 0)
                    entry_count = entry_event_count(value)
                except orjson.JSONDecodeError:
                    unreadable.append((key, value))
                    continue
                if keys and (
                    event_count + entry_count > self._config.max_batch
                    or size_bytes + len(value) > self._config.max_batch_bytes
                ):
                    break
                keys.append(key)
                size_bytes += len(value)
                entries.append(value)
                event_count += entry_count
                if event_count >= self._config.max_batch:
                    break
        for key, value in unreadable:
            # Not ours to interpret; keep the bytes where a person can find them.
            self._dead_letter.append(value)
            self._spool.remove([key])
        return keys, entries

    def _deliver(self, transport: Transport, entries: list[bytes]) -> Reply:
        return deliver_entries(
            transport,
            entries,
            self._dead_letter,
            self._report,
            self._stats,
            max_batch_bytes=self._config.max_batch_bytes,
        )

    def step(self, transport: Transport, second: SecondRequest | None = None) -> tuple[Step, float]:
        """Send the oldest batch once (and, with `second`, the batch after it at the same time
        on a second connection); say what happened and how long to wait before the next.

        The sender thread calls it in a loop; a client without threads (uWSGI without
        enable-threads) calls it from flush(), one request at a time.
        """
        if not self._spool.is_open or not self._lease.try_acquire():
            # No spool yet (events wait in memory), or another process sends for this spool.
            return Step.IDLE, self._flush_period_s
        try:
            keys, entries = self._next_batch()
            if not keys:
                return Step.IDLE, self._flush_period_s
            # Two requests in flight: while the server validates and spools one batch, this
            # process prepares and posts the next, so neither side waits on the other.
            more_keys, more_entries = self._next_batch(after=keys[-1]) if second is not None else ([], [])
            in_flight = second.post(more_entries) if second is not None and more_keys else None
            try:
                reply: Reply | None = self._deliver(transport, entries)
            finally:
                # The second batch's fate never decides this step's: if it was not delivered
                # it stays the oldest entry but one, sent again by the next step.
                more_delivered = in_flight is not None and _delivered(in_flight)
            if more_delivered:
                if reply is not None and classify(reply.status) is Outcome.DELIVERED:
                    keys = keys + more_keys
                else:
                    self._spool.remove(more_keys)
            self._stats.server_unreachable = False
        except DeliveryError as exc:
            reply = None
            self._stats.last_error = str(exc)
            self._stats.server_unreachable = isinstance(exc, ServerUnreachable)
        except TlyticsError as exc:  # the spool itself failed: keep trying, slowly
            log.error("client_spool_failed error=%s", exc)
            return Step.WAIT, 1.0
        delivered = reply is not None and classify(reply.status) is Outcome.DELIVERED
        if delivered:
            self._spool.remove(keys)
            self._attempt = 0
            self._stats.last_error = None
        with self._stats.lock:
            self._stats.attempts += 1
        with self._progress:
            # Failures too: a flush() stops waiting when no server is there at all.
            self._progress.notify_all()
        if delivered:
            return Step.SENT, 0.0
        self._attempt += 1
        with self._stats.lock:
            self._stats.retries += 1
        if reply is not None:
            self._stats.last_error = f"server answered {reply.status}"
        asked = retry_after_s(reply.headers.get("retry-after")) if reply is not None else None
        delay = backoff_delay_s(self._attempt, max_delay_s=seconds(self._config.retry_max_delay))
        log.warning(
            "client_send_retry attempt=%d delay_s=%.3f error=%s",
            self._attempt,
            asked or delay,
            self._stats.last_error,
        )
        # The server said when: a flush() must not make us knock earlier.
        return (Step.WAIT, asked) if asked is not None else (Step.RETRY, delay)

    def run(self) -> None:
        transport = Transport.for_config(self._config)
        second = SecondRequest(self._config, self._deliver)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    step, delay_s = self.step(transport, second)
                except Exception as exc:
                    # A surprise (a bug, a library raising what it should not) must not end
                    # the thread: the events would wait on disk and nobody would know why.
                    log.exception("client sender step failed; retrying")
                    self._stats.last_error = repr(exc)
                    self._attempt += 1
                    step = Step.RETRY
                    delay_s = backoff_delay_s(self._attempt, max_delay_s=seconds(self._config.retry_max_delay))
                if step is Step.SENT:
                    continue
                if step is Step.WAIT:
                    self._stop.wait(delay_s)
                else:  # idle, or a retry that a flush() may bring forward
                    self._wake.wait(delay_s)
        finally:
            transport.close()
            second.close()
            if self._stop.is_set():
                # Let another client or process send for this spool from now on.
                self._lease.release()
