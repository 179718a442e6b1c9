"""The Tlytics client: `emit()` appends to memory and returns; a spooler thread moves events
to the on-disk spool every `spool_interval`; a sender thread ships them (see sender.py).

Events survive server outages and application restarts (a new Client on the same spool_dir
sends what is left), `flush()`/`close()` always return by their deadline, and the client is
safe with threads, with fork() (the child starts its own threads and drops the parent's
in-memory events, which the parent spools), and with processes sharing one spool_dir.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from tlytics.client.config import Config, Event, seconds
from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.lease import SenderLease
from tlytics.client.sender import Sender, SenderStats, deliver
from tlytics.client.transport import Outcome, Transport, classify
from tlytics.errors import DeliveryError, EventsRejected, InvalidEvent, SpoolFull, TlyticsError
from tlytics.events import check_key
from tlytics.ids import uuid7_int
from tlytics.spool import Spool
from tlytics.timefmt import check_in_range_us, datetime_to_us, format_rfc3339_us, parse_rfc3339_us

log = logging.getLogger("tlytics.client")

# (id, key, timestamp: ns since epoch or RFC 3339 text, data)
_Pending = tuple[str, str, int | str, Mapping[str, Any]]

_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _canonical_id(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _event_dict(pending: _Pending) -> dict[str, Any]:
    event_id, key, timestamp, data = pending
    if isinstance(timestamp, int):
        timestamp = format_rfc3339_us(timestamp // 1000)
    return {"id": event_id, "key": key, "timestamp": timestamp, "data": data}


def _encode_entry(events: list[dict[str, Any]]) -> bytes:
    # default=str: a Decimal or a custom object becomes its text instead of losing the event.
    return orjson.dumps(events, default=str)


class Client:
    """Sends analytics events to a Tlytics server without ever blocking the application on it."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self._spool_dir = Path(self.config.spool_dir)
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        self._spool = ForkSafeSpool(Spool(self._spool_dir / "queue"))
        self._dead_letter = ForkSafeSpool(Spool(self._spool_dir / "dead-letter"))
        self._write_through = seconds(self.config.spool_interval) == 0
        self.dropped = 0
        self._reset_process_state()
        self._closed = False
        _clients.add(self)
        if self._spool.count():
            self._ensure_started()  # deliver what an earlier run left behind

    # --- process state -------------------------------------------------------------------

    def _reset_process_state(self) -> None:
        """State that belongs to one process; rebuilt in a forked child."""
        self._pid = os.getpid()
        self._buffer: deque[_Pending] = deque()
        self._persist_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._unsent_estimate = 0
        self.stats = SenderStats()
        self._dead_lettered_at_last_flush = 0
        self._lease = SenderLease(self._spool_dir / "sender.lock")

    def _after_fork_in_child(self) -> None:
        lease = self._lease
        self._reset_process_state()
        lease.forget_after_fork()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked without our at-fork hook (or before it ran)
            self._after_fork_in_child()

    def _ensure_started(self) -> None:
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            sender = Sender(
                spool=self._spool,
                dead_letter=self._dead_letter,
                config=self.config,
                lease=self._lease,
                report=self._report,
                wake=self._wake,
                stop=self._stop,
                progress=self._progress,
                stats=self.stats,
            )
            self._threads = [threading.Thread(target=sender.run, name="tlytics-sender", daemon=True)]
            if not self._write_through:
                self._threads.append(threading.Thread(target=self._spool_loop, name="tlytics-spooler", daemon=True))
            for thread in self._threads:
                thread.start()
            self._started = True

    # --- emitting ------------------------------------------------------------------------

    def emit(self, event: Event | str, data: Mapping[str, Any] | None = None) -> str:
        """Record an event and return its id. Never blocks on the network, never raises for it.

        `emit(Event(key="signup", data={...}))` or `emit("signup", {...})`. Raises InvalidEvent
        (a ValueError) only for an event that could never be accepted, such as an empty key.
        """
        if self._pid != os.getpid():
            self._check_pid()
        if isinstance(event, str):
            key, event_id, timestamp = event, None, None
        else:
            key, event_id, timestamp, data = event.key, event.id, event.timestamp, event.data
        check_key(key)
        pending_timestamp: int | str = time.time_ns() if timestamp is None else self._checked_timestamp(timestamp)
        if event_id is None:
            event_id = _canonical_id(uuid7_int())
        if data is None:
            data = {}
        elif not isinstance(data, Mapping):
            raise InvalidEvent("data must be a mapping", field="data")
        else:
            data = dict(data)  # the application may change its dict after emit()
        self._buffer.append((event_id, key, pending_timestamp, data))
        if self._write_through or self._closed:
            self._persist()
        if not self._started:
            self._ensure_started()
        return event_id

    @staticmethod
    def _checked_timestamp(timestamp: datetime | str) -> str:
        # The server's rules, here: an event it would refuse must not wait in the spool.
        try:
            if isinstance(timestamp, datetime):
                if timestamp.tzinfo is None:
                    raise InvalidEvent("timestamp must be timezone-aware", field="timestamp")
                return format_rfc3339_us(check_in_range_us(datetime_to_us(timestamp)))
            parse_rfc3339_us(timestamp)
        except ValueError as exc:
            if isinstance(exc, InvalidEvent):
                raise
            raise InvalidEvent(f"timestamp is {exc}", field="timestamp") from None
        return timestamp

    def emit_and_send(self, event: Event | str, data: Mapping[str, Any] | None = None) -> str:
        """Record an event and deliver it now; return its id once the server acknowledged it.

        Raises DeliveryError when the server did not acknowledge it within `timeout`; the
        event then stays spooled and the sender still delivers it later (the id makes a
        second delivery harmless). Raises EventsRejected when the server refused it for good.
        """
        pending = self._pending_from(event, data)
        record = _event_dict(pending)
        transport = Transport.for_config(self.config)
        rejected: list[TlyticsError] = []
        try:
            reply = deliver(transport, [record], self._dead_letter, rejected.append, self.stats)
        except DeliveryError:
            reply = None
        finally:
            transport.close()
        if reply is not None and classify(reply.status) is Outcome.DELIVERED:
            if rejected:
                self._report(rejected[0])
                raise rejected[0]
            return pending[0]
        # Not acknowledged: keep it for the sender, which retries until the server takes it.
        self._spool.append(_encode_entry([record]))
        self._ensure_started()
        status = "no answer" if reply is None else f"answer {reply.status}"
        raise DeliveryError(f"event {pending[0]} not acknowledged ({status}); it stays spooled and will be retried")

    def _pending_from(self, event: Event | str, data: Mapping[str, Any] | None) -> _Pending:
        """Run emit()'s checks without buffering; used by emit_and_send."""
        buffer, self._buffer = self._buffer, deque()
        write_through, self._write_through = self._write_through, False
        closed, self._closed = self._closed, False
        try:
            self.emit(event, data)
            return self._buffer.popleft()
        finally:
            self._buffer, self._write_through, self._closed = buffer, write_through, closed

    # --- the spooler ---------------------------------------------------------------------

    def _spool_loop(self) -> None:
        interval_s = seconds(self.config.spool_interval)
        while not self._stop.wait(interval_s):
            try:
                self._persist()
            except Exception:  # the thread must outlive any one failure
                log.exception("client_spooler_failed")

    def _persist(self) -> int:
        """Move everything in memory to the disk spool; return how many events were written."""
        with self._persist_lock:
            pending: list[_Pending] = []
            while self._buffer:
                try:
                    pending.append(self._buffer.popleft())
                except IndexError:
                    break
            if not pending:
                return 0
            events = [_event_dict(p) for p in pending]
            entries: list[bytes] = []
            max_batch = self.config.max_batch
            for start in range(0, len(events), max_batch):
                chunk = events[start : start + max_batch]
                try:
                    entries.append(_encode_entry(chunk))
                except TypeError:
                    entries.extend(self._encode_one_by_one(chunk))
            if self._spool.size_bytes() >= self.config.spool_max_bytes:
                self.dropped += len(events)
                self._report(
                    SpoolFull(
                        f"client spool is full ({self.config.spool_max_bytes} bytes); dropped {len(events)} new events"
                    )
                )
                return 0
            self._spool.append_many(entries)
            self._unsent_estimate += len(events)
            if self._unsent_estimate >= max_batch:
                self._unsent_estimate = 0
                self._wake.set()
            return len(events)

    def _encode_one_by_one(self, events: list[dict[str, Any]]) -> list[bytes]:
        good: list[dict[str, Any]] = []
        for event in events:
            try:
                _encode_entry([event])
                good.append(event)
            except TypeError as exc:
                self.dropped += 1
                self._report(
                    InvalidEvent(f"event {event['id']} ({event['key']}) cannot be encoded as JSON: {exc}", field="data")
                )
        return [_encode_entry(good)] if good else []

    def _report(self, error: TlyticsError) -> None:
        if self.config.on_error is None:
            return
        try:
            self.config.on_error(error)
        except Exception:
            log.exception("client_on_error_callback_failed")

    # --- flushing and closing ------------------------------------------------------------

    def pending(self) -> int:
        """Events emitted but not yet acknowledged: in memory plus spooled entries' events."""
        return len(self._buffer) + sum(len(orjson.loads(v)) for _, v in self._spool.peek(1_000_000))

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship everything emitted so far; True when all of it was acknowledged within `timeout`.

        False too when events were set aside (dead-lettered) since the last flush: see
        `stats.dead_lettered` and `stats.last_rejection`. When no server is reachable at all
        (connection refused, unknown host), returns False as soon as memory is on disk rather
        than at the deadline; the sender keeps trying in the background.
        """
        self._check_pid()
        deadline = time.monotonic() + timeout
        attempts_before = self.stats.attempts
        self._persist()
        self._ensure_started()
        self._wake.set()
        while True:
            if not self._buffer and self._spool.count() == 0:
                return self._none_dead_lettered_since_last_flush()
            if self.stats.server_unreachable and self.stats.attempts > attempts_before:
                # Nobody to retry against: waiting out the deadline would only hold up the app.
                self._none_dead_lettered_since_last_flush()
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._none_dead_lettered_since_last_flush()
                return False
            with self._progress:
                self._progress.wait(min(remaining, 0.05))

    def _none_dead_lettered_since_last_flush(self) -> bool:
        dead_lettered = self.stats.dead_lettered
        none = dead_lettered == self._dead_lettered_at_last_flush
        self._dead_lettered_at_last_flush = dead_lettered
        return none

    def close(self, timeout: float = 10.0) -> bool:
        """Flush for up to `timeout`, then stop; what was not delivered stays on disk for the
        next Client on this spool_dir. True when everything was delivered."""
        if self._closed:
            return self._spool.count() == 0
        deadline = time.monotonic() + timeout
        delivered = self.flush(timeout) if self._started or self._buffer else self._spool.count() == 0
        self._closed = True
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            self._lease.release()
        self._persist()  # anything emitted by other threads meanwhile
        return delivered

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _persist_at_exit(self) -> None:
        if self._pid == os.getpid():
            try:
                self._persist()
            except Exception:
                log.exception("client_persist_at_exit_failed")


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


def _persist_all_at_exit() -> None:
    for client in list(_clients):
        client._persist_at_exit()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_persist_all_at_exit)

__all__ = ["Client", "EventsRejected"]
