"""The background sender: ships spooled events in batches and removes them only after a 200.

Connection errors, timeouts, 408/429/5xx are retried with capped exponential backoff and
jitter (a `Retry-After` is honoured). Other 4xx answers mean the batch will never be accepted:
when the server names the bad event (`index`), only that event is set aside and the rest are
sent again at once; otherwise the batch is set aside. Set aside means moved to the dead-letter
spool, reported, and never blocking the queue behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tlytics.client.config import Config, seconds
from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.lease import SenderLease
from tlytics.client.transport import Outcome, Reply, Transport, backoff_delay_s, classify, retry_after_s
from tlytics.errors import DeliveryError, EventsRejected, TlyticsError

log = logging.getLogger("tlytics.client")


@dataclass
class SenderStats:
    delivered: int = 0
    requests: int = 0
    retries: int = 0
    dead_lettered: int = 0
    dropped: int = 0  # events the client could neither spool nor keep in memory
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def dead_letter_record(reply: Reply, events: list[Any]) -> bytes:
    return orjson.dumps({"status": reply.status, "answer": reply.json(), "failed_at": time.time(), "events": events})


def deliver(
    transport: Transport,
    events: list[Any],
    dead_letter: ForkSafeSpool,
    report: Callable[[TlyticsError], None],
    stats: SenderStats,
) -> Reply:
    """Post `events` until the server takes them or a retryable answer comes back.

    Returns the last reply: DELIVERED (possibly after setting rejected events aside) or RETRY.
    Raises DeliveryError on connection trouble.
    """
    events = list(events)
    while True:
        reply = transport.post_batch(orjson.dumps(events))
        with stats.lock:
            stats.requests += 1
        outcome = classify(reply.status)
        if outcome is not Outcome.REJECTED:
            if outcome is Outcome.DELIVERED:
                with stats.lock:
                    stats.delivered += len(events)
            return reply
        answer = reply.json()
        index = answer.get("index") if isinstance(answer, dict) else None
        if isinstance(index, int) and 0 <= index < len(events) and reply.status == 400:
            rejected = [events.pop(index)]
        else:
            rejected, events = events, []
        dead_letter.append(dead_letter_record(reply, rejected))
        with stats.lock:
            stats.dead_lettered += len(rejected)
        message = f"server rejected {len(rejected)} event(s) with {reply.status}: {answer}"
        log.error("events_dead_lettered status=%s events=%d answer=%s", reply.status, len(rejected), answer)
        report(EventsRejected(message, status=reply.status, events=rejected))
        if not events:
            # Nothing left to send: the batch is settled, like a delivery.
            return Reply(200, {}, b"{}")


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
        self._flush_period_s = seconds(config.flush_period)

    def _next_batch(self) -> tuple[list[int], list[Any]]:
        keys: list[int] = []
        events: list[Any] = []
        unreadable: list[tuple[int, bytes]] = []
        with self._spool.locked() as spool:
            # Lazily, oldest first, and only as many entries as one request takes.
            for key, value in spool.iter_oldest(self._config.max_batch):
                try:
                    entry_events = orjson.loads(value)
                except orjson.JSONDecodeError:
                    unreadable.append((key, value))
                    continue
                if keys and len(events) + len(entry_events) > self._config.max_batch:
                    break
                keys.append(key)
                events.extend(entry_events)
                if len(events) >= self._config.max_batch:
                    break
        for key, value in unreadable:
            # Not ours to interpret; keep the bytes where a person can find them.
            self._dead_letter.append(value)
            self._spool.remove([key])
        return keys, events

    def run(self) -> None:
        transport = Transport.for_config(self._config)
        attempt = 0
        try:
            while not self._stop.is_set():
                self._wake.clear()
                if not self._lease.try_acquire():
                    # Another process sends for this spool; look again later.
                    self._wake.wait(self._flush_period_s)
                    continue
                try:
                    keys, events = self._next_batch()
                    if not keys:
                        self._wake.wait(self._flush_period_s)
                        continue
                    reply = deliver(transport, events, self._dead_letter, self._report, self._stats)
                except DeliveryError as exc:
                    reply = None
                    self._stats.last_error = str(exc)
                except TlyticsError as exc:  # the spool itself failed: keep trying, slowly
                    log.error("client_spool_failed error=%s", exc)
                    self._stop.wait(1.0)
                    continue
                if reply is not None and classify(reply.status) is Outcome.DELIVERED:
                    self._spool.remove(keys)
                    attempt = 0
                    self._stats.last_error = None
                    with self._progress:
                        self._progress.notify_all()
                    continue
                attempt += 1
                with self._stats.lock:
                    self._stats.retries += 1
                if reply is not None:
                    self._stats.last_error = f"server answered {reply.status}"
                asked = retry_after_s(reply.headers.get("retry-after")) if reply is not None else None
                delay = backoff_delay_s(attempt, max_delay_s=seconds(self._config.retry_max_delay))
                log.warning(
                    "client_send_retry attempt=%d delay_s=%.3f error=%s",
                    attempt,
                    asked or delay,
                    self._stats.last_error,
                )
                if asked is not None:
                    # The server said when; a flush() must not make us knock earlier.
                    self._stop.wait(asked)
                else:
                    self._wake.wait(delay)
        finally:
            transport.close()
            if self._stop.is_set():
                # Let another client or process send for this spool from now on.
                self._lease.release()
