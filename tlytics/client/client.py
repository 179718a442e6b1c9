"""The Tlytics client: `emit()` appends to memory and returns; a spooler thread moves events
to the on-disk spool every `spool_interval`; a sender thread ships them (see sender.py).

Events survive server outages and application restarts (a new Client on the same spool_dir
sends what is left), `flush()`/`close()` always return by their deadline, and the client is
safe with threads, with fork() (the child starts its own threads and drops the parent's
in-memory events, which the parent spools), and with processes sharing one spool_dir.

At interpreter exit each client tries for up to `Config.flush_at_exit` to deliver what is
pending; the rest stays on disk. `Config(disabled=True)` makes a client that only validates.
Under uWSGI without Python threads (see uwsgi.py) no thread is started: emit() writes to disk
and flush()/close() send in the caller's thread.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import math
import os
import re
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
from tlytics.client.forksafe import ForkSafeSpool, SpoolNotOpen
from tlytics.client.hooks import BeforeSendFailed, run_before_send, with_default_data
from tlytics.client.lease import SenderLease
from tlytics.client.sender import Sender, SenderStats, Step, deliver
from tlytics.client.transport import Outcome, Transport, classify
from tlytics.client.uwsgi import threads_unavailable
from tlytics.errors import (
    DeliveryError,
    EventsDropped,
    EventsRejected,
    InvalidEvent,
    SpoolError,
    SpoolFull,
    TlyticsError,
)
from tlytics.events import UUID_PATTERN, check_key
from tlytics.ids import _reseed_after_fork as _reseed_ids_after_fork
from tlytics.ids import uuid7_int
from tlytics.spool import Spool
from tlytics.timefmt import check_in_range_us, datetime_to_us, format_rfc3339_us, parse_rfc3339_us

log = logging.getLogger("tlytics.client")

# (id, key, timestamp: ns since epoch or RFC 3339 text, data)
_Pending = tuple[str, str, int | str, Mapping[str, Any]]

_clients: weakref.WeakSet[Client] = weakref.WeakSet()

# While the spool refuses events: drops are reported at most this often (the first at once),
# and the spooler (or a write-through emit) retries it at most this often: each retry encodes
# the whole backlog again, up to max_memory_events, which must not eat the application's CPU.
_DROP_REPORT_PERIOD_S = 1.0
_REFUSED_RETRY_PERIOD_S = 0.25


def _canonical_id(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_EVENT_ID = re.compile(UUID_PATTERN)


def _checked_id(event_id: object) -> str:
    """An event id as the server stores it (lowercase), or InvalidEvent: an id the server
    refuses ("", braces, no hyphens) must not wait in the spool to be dead-lettered later."""
    if not isinstance(event_id, str) or _EVENT_ID.match(event_id) is None:
        raise InvalidEvent("id must be a UUID string, e.g. 0190a5d6-0000-7000-8000-000000000001", field="id")
    return event_id.lower()


def _event_dict(pending: _Pending) -> dict[str, Any]:
    event_id, key, timestamp, data = pending
    if isinstance(timestamp, int):
        timestamp = format_rfc3339_us(timestamp // 1000)
    return {"id": event_id, "key": key, "timestamp": timestamp, "data": data}


def _open_spool(directory: Path) -> Spool:
    directory.mkdir(parents=True, exist_ok=True)
    return Spool(directory)


def _encode_entry(events: list[dict[str, Any]]) -> bytes:
    # default=str: a Decimal or a custom object becomes its text instead of losing the event.
    encoded = orjson.dumps(events, default=str)
    # orjson writes NaN and Infinity as null: the event would be stored changed, silently (the
    # server refuses them in JSON text). Only a body with a null can hold one, so most
    # batches are not walked at all.
    if b"null" in encoded:
        for event in events:
            _refuse_non_finite_numbers(event["data"])
    return encoded


def _refuse_non_finite_numbers(data: Any) -> None:
    """TypeError (as for data orjson cannot encode) when `data` holds a NaN or an infinity."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise TypeError(f"{value} is not a JSON number (the server refuses NaN and Infinity)")
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)


class Client:
    """Sends analytics events to a Tlytics server without ever blocking the application on it."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self._disabled = self.config.disabled
        self._default_data = dict(self.config.default_data) if self.config.default_data else None
        self._before_send = self.config.before_send
        self._spool_dir = Path(self.config.spool_dir)
        # Opened lazily: a spool_dir that cannot be written must not make Client() raise.
        self._spool = ForkSafeSpool(functools.partial(_open_spool, self._spool_dir / "queue"))
        self._dead_letter = ForkSafeSpool(functools.partial(_open_spool, self._spool_dir / "dead-letter"))
        # No thread would ever run (uWSGI without enable-threads): spool at emit, send at flush.
        self._threadless = not self._disabled and threads_unavailable()
        self._write_through = self._threadless or seconds(self.config.spool_interval) == 0
        self._reset_process_state()
        self._closed = False
        if self._disabled:
            return  # no disk, no thread, nothing to do at exit
        _clients.add(self)
        try:
            left_behind = self._spool.count()
        except SpoolNotOpen as exc:
            self._spool_refused(exc)  # warns once, for the whole episode
            self._report(exc)
            return
        if left_behind:
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
        self._sender: Sender | None = None
        self._inline_send_lock = threading.Lock()
        self._before_send_failure_logged = False
        self._started = False
        self._unsent_estimate = 0
        self.stats = SenderStats()
        # Set while the spool refuses events (disk full, spool_max_bytes, I/O errors): emit
        # then keeps at most config.max_memory_events in memory and drops the newest.
        self._spool_refusal: str | None = None
        self._last_refused_at = 0.0
        self._unreported_drops = 0
        self._last_drop_report_at: float | None = None
        self._dead_lettered_at_last_flush = 0
        self._lease = SenderLease(self._spool_dir / "sender.lock")

    def _after_fork_in_child(self) -> None:
        lease = self._lease
        self._reset_process_state()
        lease.forget_after_fork()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            # Forked without Python's at-fork hooks: uWSGI forks its workers in C and runs
            # them only with py-call-uwsgi-fork-hooks. Then tlytics.ids did not reseed either,
            # and two workers would make the same ids (the store keeps one: events lost);
            # nor were this client's spool locks renewed, which a parent thread may hold.
            _reseed_ids_after_fork()
            self._spool.renew_lock_after_fork()
            self._dead_letter.renew_lock_after_fork()
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
            self._sender = sender
            if self._threadless:
                self._started = True
                return
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
        event_id = _canonical_id(uuid7_int()) if event_id is None else _checked_id(event_id)
        if data is None:
            data = {}
        elif not isinstance(data, Mapping):
            raise InvalidEvent("data must be a mapping", field="data")
        else:
            data = dict(data)  # the application may change its dict after emit()
        if self._disabled:
            return event_id
        if self._default_data is not None:
            data = with_default_data(self._default_data, data)
        if self._before_send is not None:
            pending = self._before_send_answer((event_id, key, pending_timestamp, data))
            if pending is None:
                return event_id
            event_id, key, pending_timestamp, data = pending
        if self._spool_refusal is not None and len(self._buffer) >= self.config.max_memory_events:
            self._count_dropped(1)
        else:
            self._buffer.append((event_id, key, pending_timestamp, data))
        if self._closed or (
            self._write_through
            and (self._spool_refusal is None or time.monotonic() - self._last_refused_at >= _REFUSED_RETRY_PERIOD_S)
        ):
            self._persist()
        if not self._started:
            self._ensure_started()
        return event_id

    def _before_send_answer(self, pending: _Pending) -> _Pending | None:
        """The event as before_send returns it, or None when it is to be dropped."""
        assert self._before_send is not None
        event_id, key, timestamp, data = pending
        shown = Event(
            key=key,
            data=data,
            id=event_id,
            timestamp=format_rfc3339_us(timestamp // 1000) if isinstance(timestamp, int) else timestamp,
        )
        try:
            answer = run_before_send(self._before_send, shown)
            if answer is None:
                with self.stats.lock:
                    self.stats.filtered += 1
                return None
            # The hook may have changed anything: the same checks as emit()'s.
            new_data = answer.data
            if new_data is None:
                new_data = {}
            elif not isinstance(new_data, Mapping):
                raise InvalidEvent("data must be a mapping", field="data")
            return (
                _canonical_id(uuid7_int()) if answer.id is None else _checked_id(answer.id),
                check_key(answer.key),
                time.time_ns() if answer.timestamp is None else self._checked_timestamp(answer.timestamp),
                dict(new_data),
            )
        except Exception as exc:
            with self.stats.lock:
                self.stats.before_send_failed += 1
            if not self._before_send_failure_logged:  # a broken hook fails on every event
                self._before_send_failure_logged = True
                log.exception("client_before_send_failed key=%s; the event is dropped", key)
            self._report(
                BeforeSendFailed(
                    f"before_send failed on event {event_id} ({key}): {exc!r}; the event was dropped",
                    event_id=event_id,
                    key=key,
                )
            )
            return None

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
        if pending is None:  # disabled, or before_send dropped it
            return self._last_emitted_id
        record = _event_dict(pending)
        try:
            # Encoded as emit() spools it (a Decimal as its text; NaN refused), then sent as that.
            entry = _encode_entry([record])
        except TypeError as exc:
            raise InvalidEvent(f"event {pending[0]} cannot be encoded as JSON: {exc}", field="data") from None
        transport = Transport.for_config(self.config)
        rejected: list[TlyticsError] = []
        try:
            reply = deliver(transport, orjson.loads(entry), self._dead_letter, rejected.append, self.stats)
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
        try:
            self._spool.append(entry)
        except SpoolError:
            self._buffer.append(pending)  # the spooler writes it once the spool takes events
        self._ensure_started()
        status = "no answer" if reply is None else f"answer {reply.status}"
        raise DeliveryError(f"event {pending[0]} not acknowledged ({status}); it stays spooled and will be retried")

    def _pending_from(self, event: Event | str, data: Mapping[str, Any] | None) -> _Pending | None:
        """Run emit()'s checks without buffering; used by emit_and_send. None when there is
        nothing to send (disabled, or before_send dropped it); its id is in _last_emitted_id."""
        buffer, self._buffer = self._buffer, deque()
        write_through, self._write_through = self._write_through, False
        closed, self._closed = self._closed, False
        refusal, self._spool_refusal = self._spool_refusal, None  # so emit() never drops this one
        try:
            self._last_emitted_id = self.emit(event, data)
            return self._buffer.popleft() if self._buffer else None
        finally:
            self._buffer, self._write_through, self._closed = buffer, write_through, closed
            self._spool_refusal = refusal

    # --- the spooler ---------------------------------------------------------------------

    def _spool_loop(self) -> None:
        interval_s = seconds(self.config.spool_interval)
        while not self._stop.wait(interval_s):
            try:
                if (
                    self._spool_refusal is not None
                    and time.monotonic() - self._last_refused_at < _REFUSED_RETRY_PERIOD_S
                ):
                    self._report_drops()  # drops made by emit() meanwhile
                    continue
                self._persist()
            except Exception:  # the thread must outlive any one failure
                log.exception("client_spooler_failed")

    def _persist(self) -> int:
        """Move everything in memory to the disk spool; return how many events were written.

        Events leave memory only once the spool holds them. When it refuses them they stay,
        up to config.max_memory_events (the newest beyond are dropped, counted, reported),
        and go to disk in order on a later call that succeeds.
        """
        with self._persist_lock:
            # A copy, not pops: emit() appends concurrently, and until the append below
            # succeeds these events must stay where flush() and a crash-free exit see them.
            waiting = self._buffer.copy()
            count = len(waiting)
            if not count:
                self._report_drops()
                return 0
            entries, unencodable = self._encode_entries([_event_dict(p) for p in waiting])
            try:
                if self._spool.size_bytes() >= self.config.spool_max_bytes:
                    raise SpoolFull(f"client spool is full ({self.config.spool_max_bytes} bytes)")
                if entries:
                    self._spool.append_many(entries)
            except (SpoolError, OSError) as exc:
                self._spool_refused(exc)
                return 0
            for _ in range(count):
                self._buffer.popleft()
            if self._spool_refusal is not None:
                log.warning("client spool takes events again; %d kept in memory were written", count)
                self._report_drops(episode_over=True)
                self._spool_refusal = None
            else:
                self._report_drops()
            for event, encode_error in unencodable:
                self._count_dropped(1, report=False)
                self._report(
                    InvalidEvent(
                        f"event {event['id']} ({event['key']}) cannot be encoded as JSON: {encode_error}", field="data"
                    )
                )
            written = count - len(unencodable)
            self._unsent_estimate += written
            if self._unsent_estimate >= self.config.max_batch:
                self._unsent_estimate = 0
                self._wake.set()
            return written

    def _encode_entries(
        self, events: list[dict[str, Any]]
    ) -> tuple[list[bytes], list[tuple[dict[str, Any], TypeError]]]:
        """Spool entries of up to max_batch events, and the events that cannot be encoded."""
        entries: list[bytes] = []
        unencodable: list[tuple[dict[str, Any], TypeError]] = []
        max_batch = self.config.max_batch
        for start in range(0, len(events), max_batch):
            chunk = events[start : start + max_batch]
            try:
                entries.append(_encode_entry(chunk))
            except TypeError:
                good: list[dict[str, Any]] = []
                for event in chunk:
                    try:
                        _encode_entry([event])
                        good.append(event)
                    except TypeError as exc:
                        unencodable.append((event, exc))
                if good:
                    entries.append(_encode_entry(good))
        return entries, unencodable

    def _spool_refused(self, exc: BaseException) -> None:
        """The spool did not take the events in memory: keep them, up to the bound."""
        self._last_refused_at = time.monotonic()
        if self._spool_refusal is None:
            log.warning(
                "client spool cannot take events (%s); keeping up to %d in memory",
                exc,
                self.config.max_memory_events,
            )
        self._spool_refusal = str(exc)
        excess = 0
        while len(self._buffer) > self.config.max_memory_events:
            try:
                self._buffer.pop()  # the newest: the oldest keep their place in line
            except IndexError:
                break
            excess += 1
        if excess:
            self._count_dropped(excess)
        self._report_drops()

    def _count_dropped(self, count: int, *, report: bool = True) -> None:
        with self.stats.lock:
            self.stats.dropped += count
            if report:
                self._unreported_drops += count

    def _report_drops(self, *, episode_over: bool = False, final: bool = False) -> None:
        """Tell on_error how many events were dropped: the first drop of an episode at once,
        then at most once per _DROP_REPORT_PERIOD_S, and the rest when the episode ends."""
        now = time.monotonic()
        with self.stats.lock:
            count = self._unreported_drops
            due = (
                final
                or episode_over
                or self._closed
                or self._last_drop_report_at is None
                or now - self._last_drop_report_at >= _DROP_REPORT_PERIOD_S
            )
            if count and due:
                self._unreported_drops = 0
                self._last_drop_report_at = now
            if episode_over:
                self._last_drop_report_at = None
        if count and due:
            self._report(
                EventsDropped(
                    f"dropped {count} newest events: the spool cannot take them ({self._spool_refusal or 'refused'})"
                    f" and {self.config.max_memory_events} are waiting in memory",
                    count=count,
                )
            )

    @property
    def dropped(self) -> int:
        """Events this process dropped: the spool could not take them and memory was at its bound."""
        return self.stats.dropped

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
        if not self._spool.is_open:
            return len(self._buffer)
        return len(self._buffer) + sum(len(orjson.loads(v)) for _, v in self._spool.peek(1_000_000))

    def _spooled(self) -> int:
        """Entries on disk; none while the spool cannot be opened."""
        return self._spool.count() if self._spool.is_open else 0

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship everything emitted so far; True when all of it was acknowledged within `timeout`.

        False too when events were set aside (dead-lettered) since the last flush: see
        `stats.dead_lettered` and `stats.last_rejection`. When no server is reachable at all
        (connection refused, unknown host), returns False as soon as memory is on disk rather
        than at the deadline; the sender keeps trying in the background.
        """
        if self._disabled:
            return True
        self._check_pid()
        deadline = time.monotonic() + timeout
        attempts_before = self.stats.attempts
        if not self._spool.is_open and self._spool.try_open(now=True):
            self._last_refused_at = 0.0  # the spooler need not wait to write what is in memory
        self._persist()
        if self._buffer and not self._spool.is_open:
            # Nothing can leave before the spool opens; the events wait in memory.
            self._none_dead_lettered_since_last_flush()
            return False
        self._ensure_started()
        if self._threadless:
            return self._flush_in_this_thread(deadline)
        self._wake.set()
        while True:
            if not self._buffer and self._spooled() == 0:
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

    def _flush_in_this_thread(self, deadline: float) -> bool:
        """flush() without a sender thread: send batch after batch until the spool is empty,
        a delivery fails, or the deadline passes (no request outlives it by much)."""
        assert self._sender is not None
        with self._inline_send_lock:
            request_timeout_s = min(seconds(self.config.timeout), max(deadline - time.monotonic(), 0.1))
            transport = Transport(
                self.config.server_url,
                timeout_s=request_timeout_s,
                write_key=self.config.write_key,
                gzip_min_bytes=self.config.gzip_min_bytes,
            )
            try:
                while self._buffer or self._spooled():
                    if time.monotonic() >= deadline:
                        break
                    self._persist()
                    step, _ = self._sender.step(transport)
                    if step is not Step.SENT:
                        break  # failed, or another process holds the lease: stays on disk
                else:
                    return self._none_dead_lettered_since_last_flush()
            finally:
                transport.close()
        self._none_dead_lettered_since_last_flush()
        return False

    def _none_dead_lettered_since_last_flush(self) -> bool:
        dead_lettered = self.stats.dead_lettered
        none = dead_lettered == self._dead_lettered_at_last_flush
        self._dead_lettered_at_last_flush = dead_lettered
        return none

    def close(self, timeout: float = 10.0) -> bool:
        """Flush for up to `timeout`, then stop; what was not delivered stays on disk for the
        next Client on this spool_dir. True when everything was delivered."""
        if self._disabled:
            self._closed = True
            return True
        if self._closed:
            return self._spooled() == 0 and not self._buffer
        deadline = time.monotonic() + timeout
        delivered = self.flush(timeout) if self._started or self._buffer else self._spooled() == 0
        self._closed = True
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            self._lease.release()
        self._persist()  # anything emitted by other threads meanwhile
        return delivered

    async def aflush(self, timeout: float = 10.0) -> bool:
        """flush() for asyncio applications: it runs in a worker thread, so the event loop
        keeps serving while it waits. Same return value as flush()."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float = 10.0) -> bool:
        """close() for asyncio applications (an aiohttp cleanup context, a FastAPI lifespan):
        it runs in a worker thread, so shutdown never blocks the loop. Same return value."""
        return await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _at_exit(self) -> None:
        if self._pid != os.getpid():
            return
        flush_s = seconds(self.config.flush_at_exit)
        if flush_s > 0 and not self._closed and (self._started or self._buffer):
            # Short-lived scripts and containers: deliver what we can within the bound; the
            # rest stays on disk for the next run.
            try:
                self.close(flush_s)
            except Exception:
                log.exception("client_flush_at_exit_failed")
        self._persist_at_exit()

    def _persist_at_exit(self) -> None:
        if self._pid == os.getpid():
            try:
                self._persist()
            except Exception:
                log.exception("client_persist_at_exit_failed")
            # The spool still refuses them and memory dies with the process: count and say so.
            if lost := len(self._buffer):
                self._buffer.clear()
                self._count_dropped(lost)
                self._report_drops(final=True)


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


def _all_at_exit() -> None:
    for client in list(_clients):
        client._at_exit()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_all_at_exit)

__all__ = ["BeforeSendFailed", "Client", "EventsRejected"]
