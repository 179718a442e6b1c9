"""The background sender: ships spooled events in batches and removes them only after a 200.

Connection errors, timeouts, 408/429/5xx are retried with capped exponential backoff and
jitter; a `Retry-After` on any answer (either of the two requests in flight) holds back every
connection for that long. Connection refused or an unknown host is reported as
`server_unreachable` so flush() need not wait for it. What a batch's answer means (413
splitting, setting events aside) is delivery.py's. Only the holder of the sender lease sends;
a flush() in another process rings the lease's wake file, which an idle sender watches.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from enum import Enum

import orjson

from tlytics.client.config import Config, seconds
from tlytics.client.delivery import (
    LearnedLimits,
    SenderStats,
    deliver,
    deliver_entries,
    entry_event_count,
    split_by_size,
)
from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.lease import SenderLease, WakeFile
from tlytics.client.transport import BaseTransport, Outcome, Reply, backoff_delay_s, classify, retry_after_s
from tlytics.errors import DeliveryError, EventsRejected, ServerUnreachable, TlyticsError

log = logging.getLogger("tlytics.client")


# The shortest wait of an idle sender: emitted events reach the disk every spool_interval
# (50 ms by default) anyway, and max_batch waiting or a flush() wakes it at once.
MIN_IDLE_WAIT_S = 0.05
# How often an idle sender looks at the wake file another process's flush() may ring.
WAKE_POLL_S = 0.1


class Step(Enum):
    """What one Sender.step did."""

    SENT = "sent"  # a batch was delivered: go on at once
    IDLE = "idle"  # nothing to send (or not ours to send): wait for a wake-up or flush_period
    RETRY = "retry"  # failed: wait the backoff, unless a flush() wakes the sender
    WAIT = "wait"  # failed, and the server (Retry-After) or the spool asks for a fixed wait


def _answer(in_flight: Future[Reply]) -> Reply | None:
    """The answer to the request behind `in_flight`; waits for it (bounded by the transport's
    timeout). None for a connection failure."""
    try:
        return in_flight.result()
    except DeliveryError:
        return None


def _asked_wait_s(*replies: Reply | None) -> float | None:
    """The longest Retry-After among the answers: the server asked this process to wait."""
    asked = [retry_after_s(r.headers.get("retry-after")) for r in replies if r is not None]
    waits = [a for a in asked if a is not None]
    return max(waits) if waits else None


class SecondRequest:
    """A second connection, and a daemon thread posting on it, so the sender keeps two requests
    in flight. A daemon, like the sender thread: a request to a server that hangs must never
    hold up the application's exit (flush_at_exit bounds that)."""

    def __init__(self, transport: BaseTransport, deliver: Callable[[BaseTransport, list[bytes]], Reply]) -> None:
        self._transport = transport
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
        wake_file: WakeFile,
        limits: LearnedLimits,
        new_transport: Callable[[], BaseTransport],
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
        self._wake_file = wake_file
        self._limits = limits
        self._new_transport = new_transport
        self._report = report
        self._wake = wake
        self._stop = stop
        self._progress = progress
        self._stats = stats
        # An idle sender waits at least MIN_IDLE_WAIT_S: flush_period=0 (send at once) made
        # it poll an empty spool in a loop, most of a core for nothing.
        self._flush_period_s = max(seconds(config.flush_period), MIN_IDLE_WAIT_S)
        self._attempt = 0  # failed attempts in a row, for the backoff
        self._removed_since_checkpoint = False

    def _next_batch(self, after: int = -1) -> tuple[list[int], list[bytes]]:
        """The oldest spool entries (with keys above `after`) that fit one request: their keys
        and their bytes."""
        keys: list[int] = []
        entries: list[bytes] = []
        unreadable: list[tuple[int, bytes]] = []
        size_bytes = 0
        event_count = 0
        max_events = self._limits.max_events
        max_bytes = self._limits.max_bytes
        with self._spool.locked() as spool:
            # Lazily, oldest first, and only as many entries as one request takes.
            for key, value in spool.iter_oldest(max_events, after=after):
                try:
                    if value[:1] != b"[" or value[-1:] != b"]":
                        raise orjson.JSONDecodeError("not a JSON array", value.decode("utf-8", "replace"), 0)
                    entry_count = entry_event_count(value)
                except ValueError:  # orjson's and json's JSONDecodeError alike
                    unreadable.append((key, value))
                    continue
                if keys and (event_count + entry_count > max_events or size_bytes + len(value) > max_bytes):
                    break
                keys.append(key)
                size_bytes += len(value)
                entries.append(value)
                event_count += entry_count
                if event_count >= max_events:
                    break
        for key, value in unreadable:
            # Not ours to interpret; keep the bytes where a person can find them.
            self._dead_letter.append(value)
            self._spool.remove([key])
        return keys, entries

    def _deliver(self, transport: BaseTransport, entries: list[bytes]) -> Reply:
        return deliver_entries(transport, entries, self._dead_letter, self._report, self._stats, self._limits)

    def step(self, transport: BaseTransport, second: SecondRequest | None = None) -> tuple[Step, float]:
        """Send the oldest batch once (and, with `second`, the batch after it at the same time
        on a second connection); say what happened and how long to wait before the next.

        The sender thread calls it in a loop; a client without threads (uWSGI without
        enable-threads) calls it from flush(), one request at a time.
        """
        second_reply: Reply | None = None
        if not self._spool.is_open or not self._lease.try_acquire():
            # No spool yet (events wait in memory), or another process sends for this spool.
            return Step.IDLE, self._flush_period_s
        try:
            keys, entries = self._next_batch()
            if not keys:
                if self._removed_since_checkpoint:
                    # Drained: copy the WAL into the database so the disk its removals took
                    # is given back (a spool that filled its disk takes appends again).
                    self._removed_since_checkpoint = False
                    self._spool.checkpoint()
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
                second_reply = _answer(in_flight) if in_flight is not None else None
            more_delivered = second_reply is not None and classify(second_reply.status) is Outcome.DELIVERED
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
        # The server asked to wait (a 429, a 503) on either connection: both wait.
        asked = _asked_wait_s(reply, second_reply)
        if delivered:
            self._spool.remove(keys)
            self._removed_since_checkpoint = True
            self._attempt = 0
            self._stats.last_error = None
        with self._stats.lock:
            self._stats.attempts += 1
        with self._progress:
            # Failures too: a flush() stops waiting when no server is there at all.
            self._progress.notify_all()
        if delivered:
            return (Step.WAIT, asked) if asked else (Step.SENT, 0.0)
        self._attempt += 1
        with self._stats.lock:
            self._stats.retries += 1
        if reply is not None:
            self._stats.last_error = f"server answered {reply.status}"
        delay = backoff_delay_s(self._attempt, max_delay_s=seconds(self._config.retry_max_delay))
        log.warning(
            "client_send_retry attempt=%d delay_s=%.3f error=%s",
            self._attempt,
            asked or delay,
            self._stats.last_error,
        )
        # The server said when: a flush() must not make us knock earlier.
        return (Step.WAIT, asked) if asked is not None else (Step.RETRY, delay)

    def _idle(self, delay_s: float) -> None:
        """Wait up to `delay_s` for a wake-up: this process's (an Event) or another's (the
        wake file, rung by a flush() in a process that does not hold the lease)."""
        deadline = time.monotonic() + delay_s
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._wake.wait(min(remaining, WAKE_POLL_S)) or self._wake_file.rang():
                return

    def run(self) -> None:
        transport = self._new_transport()
        second = SecondRequest(self._new_transport(), self._deliver)
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
                    self._idle(delay_s)
        finally:
            transport.close()
            second.close()
            if self._stop.is_set():
                # Let another client or process send for this spool from now on.
                self._lease.release()


# Delivery's names (and its error's) stay importable from here: replay and older code use them.
__all__ = [
    "MIN_IDLE_WAIT_S",
    "EventsRejected",
    "SecondRequest",
    "Sender",
    "SenderStats",
    "Step",
    "deliver",
    "deliver_entries",
    "entry_event_count",
    "split_by_size",
]
