"""The Tlytics client, the application's one object: `emit()` checks and prepares an event
(prepare.py) and hands it to the buffer, whose spooler thread moves it to the on-disk spool
every `spool_interval` (buffer.py); a sender thread ships the spool (sender.py, delivery.py)
through a transport (transport.py). This class only wires them and answers flush()/close().

Events survive server outages and application restarts (a new Client on the same spool_dir
and destination sends what is left), `flush()`/`close()` always return by their deadline, and
the client is safe with threads, with fork() and multiprocessing (see lifecycle.py), and with
processes sharing one spool_dir. `Config(disabled=True)` makes a client that only validates;
`Config(capture=True)` one that keeps events in `captured` for the application's tests. Under
uWSGI without Python threads (see uwsgi.py) no thread is started: emit() writes to disk and
flush()/close() send in the caller's thread.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from tlytics.client.async_methods import AsyncMethods
from tlytics.client.buffer import SpoolBuffer
from tlytics.client.config import Config, Event, seconds
from tlytics.client.delivery import LearnedLimits, SenderStats
from tlytics.client.destination import destination_dir, open_dead_letter, open_destination_queue
from tlytics.client.forksafe import ForkSafeSpool, SpoolNotOpen
from tlytics.client.hooks import BeforeSendFailed
from tlytics.client.lifecycle import register as register_in_this_process
from tlytics.client.pipeline import Pipeline
from tlytics.client.prepare import (
    Filtered,
    Prepared,
    entry_bytes,
    event_json,
    loads_exact,
    merged,
    prepare_event,
    prepare_plain,
)
from tlytics.client.send_now import send_now
from tlytics.client.sender import Sender
from tlytics.client.uwsgi import threads_unavailable
from tlytics.errors import ClientClosed, DeliveryError, EventsRejected, SpoolError, TlyticsError
from tlytics.ids import _reseed_after_fork as _reseed_ids_after_fork

log = logging.getLogger("tlytics.client")


class Client(AsyncMethods):
    """Sends analytics events to a Tlytics server without ever blocking the application on it."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()
        self._disabled = self.config.disabled
        self._capture = self.config.capture and not self._disabled
        self.captured: list[Event] = []  # capture mode: every event emitted, in order
        self._default_data = dict(self.config.default_data) if self.config.default_data else None
        # Nothing to merge, no hook, events go to the buffer: emit() may take prepare_plain().
        self._plain = not (self._disabled or self._capture or self._default_data or self.config.before_send)
        self._context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
            f"tlytics_context_{id(self)}", default=None
        )
        self._destination = destination_dir(Path(self.config.spool_dir), self.config.server_url, self.config.write_key)
        reserve = self.config.spool_min_free_bytes
        # Opened lazily: a spool_dir that cannot be written must not make Client() raise.
        self._spool = ForkSafeSpool(
            functools.partial(open_destination_queue, self._destination, self.config.server_url, min_free_bytes=reserve)
        )
        self._dead_letter = ForkSafeSpool(
            functools.partial(open_dead_letter, self._destination, min_free_bytes=reserve)
        )
        self._limits = LearnedLimits(self.config.max_batch, self.config.max_batch_bytes)
        # No thread would ever run (uWSGI without enable-threads): spool at emit, send at flush.
        self._threadless = not self._disabled and not self._capture and threads_unavailable()
        self._reset_process_state()
        self._closed = False
        if self._disabled or self._capture:
            return  # no disk, no thread, nothing to do at exit
        register_in_this_process(self)
        try:
            left_behind = self._spool.count()
        except SpoolNotOpen as exc:
            self._buffer.refused(exc)  # warns once, for the whole episode
            self._report(exc)
            return
        if left_behind:
            self._pipeline.ensure_started()  # deliver what an earlier run left behind

    # --- process state -------------------------------------------------------------------

    def _reset_process_state(self) -> None:
        """State that belongs to one process; rebuilt in a forked child."""
        self._pid = os.getpid()
        self._before_send_failure_logged = False
        self._pipeline = Pipeline(
            config=self.config,
            spool=self._spool,
            dead_letter=self._dead_letter,
            destination=self._destination,
            limits=self._limits,
            threadless=self._threadless,
            report=self._report,
        )

    @property
    def stats(self) -> SenderStats:
        """What this process's sender did (see SenderStats)."""
        return self._pipeline.stats

    @property
    def _buffer(self) -> SpoolBuffer:
        return self._pipeline.buffer

    @property
    def _sender(self) -> Sender | None:
        return self._pipeline.sender

    def _after_fork_in_child(self) -> None:
        lease = self._pipeline.lease
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

    # --- emitting ------------------------------------------------------------------------

    @contextmanager
    def context(self, **data: Any) -> Iterator[None]:
        """Merge `data` into every event emitted inside the block, in this thread or asyncio
        task only (a contextvar); an event's own values win. Blocks nest."""
        token = self._context.set(merged(self._context.get(), data))
        try:
            yield
        finally:
            self._context.reset(token)

    def context_data(self, **data: Any) -> None:
        """Add `data` to the current context (this request's thread or task) for the rest of
        it, without a block: what a middleware does for a whole request."""
        self._context.set(merged(self._context.get(), data))

    def _check_open(self) -> None:
        if self._pid != os.getpid():
            self._check_pid()
        if self._closed:
            raise ClientClosed("this Client is closed: the event would never be sent; make a new Client")

    def _prepare(
        self, event: Event | str, data: Mapping[str, Any] | None, event_id: str | None, timestamp: datetime | str | None
    ) -> Prepared | str:
        """The prepared event, or the id of one not to be recorded (disabled, filtered, or a
        broken before_send: counted and reported)."""
        self._check_open()
        if self._disabled:
            prepared = prepare_event(event, data, event_id=event_id, timestamp=timestamp)
            return prepared.id
        context = self._context.get()
        try:
            prepared = prepare_event(
                event,
                data,
                event_id=event_id,
                timestamp=timestamp,
                default_data=merged(self._default_data, context) if context else self._default_data,
                before_send=self.config.before_send,
            )
        except BeforeSendFailed as exc:
            with self.stats.lock:
                self.stats.before_send_failed += 1
            if not self._before_send_failure_logged:  # a broken hook fails on every event
                self._before_send_failure_logged = True
                log.error("client_before_send_failed key=%s; the event is dropped", exc.key, exc_info=exc.__cause__)
            self._report(exc)
            return exc.event_id
        if isinstance(prepared, Filtered):
            with self.stats.lock:
                self.stats.filtered += 1
            return prepared.id
        if self._capture:
            self.captured.append(_as_event(prepared))
            return prepared.id
        return prepared

    def emit(
        self,
        event: Event | str,
        data: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | str | None = None,
        id: str | None = None,
    ) -> str:
        """Record an event and return its id. Never blocks on the network, never raises for it.

        `emit("signup", {...}, timestamp=..., id=...)` or `emit(Event(key="signup", ...))`.
        Raises InvalidEvent (a ValueError) for an event the server would refuse (see
        prepare.py), ClientClosed after close().
        """
        if (
            type(data) is dict
            and type(event) is str
            and id is None
            and timestamp is None
            and self._plain
            and self._context.get() is None
        ):
            # The common case without _prepare's detours (same checks: see prepare_plain).
            if self._pid != os.getpid() or self._closed:
                self._check_open()
            prepared = prepare_plain(event, data)
        else:
            prepared_or_id = self._prepare(event, data, id, timestamp)
            if isinstance(prepared_or_id, str):
                return prepared_or_id
            prepared = prepared_or_id
        self._buffer.add(prepared)
        if not self._pipeline.started:
            self._pipeline.ensure_started()
        return prepared.id

    def emit_and_send(
        self,
        event: Event | str,
        data: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | str | None = None,
        id: str | None = None,
    ) -> str:
        """Record an event and deliver it now; return its id once the server acknowledged it.

        Raises DeliveryError when the server did not acknowledge it within `timeout`; the
        event then stays spooled and the sender still delivers it later (the id makes a
        second delivery harmless). Raises EventsRejected when the server refused it for good.
        """
        prepared = self._prepare(event, data, id, timestamp)
        if isinstance(prepared, str):
            return prepared
        sent = send_now(self.config, prepared, self._dead_letter, self.stats, self._limits)
        if sent.rejected is not None:
            self._report(sent.rejected)
            raise sent.rejected
        if sent.acknowledged:
            return prepared.id
        # Not acknowledged: keep it for the sender, which retries until the server takes it.
        try:
            self._spool.append(entry_bytes([prepared]))
        except SpoolError:
            self._buffer.add(prepared)  # the spooler writes it once the spool takes events
        self._pipeline.ensure_started()
        raise DeliveryError(
            f"event {prepared.id} not acknowledged ({sent.status}); it stays spooled and will be retried"
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
        return len(self._buffer) + sum(len(loads_exact(v)) for _, v in self._spool.peek(1_000_000))

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship everything emitted so far. True only when every event this process knows of
        (emitted here, or found spooled for this destination) was acknowledged by the server
        within `timeout`, and none was set aside (dead-lettered, see `stats.last_rejection`)
        or dropped (`dropped`) since the last flush(). False otherwise, with what is left safe
        on disk (or in memory while the spool refuses it).

        When no server is reachable at all (connection refused, unknown host), returns False
        as soon as memory is on disk rather than at the deadline; the sender keeps trying.
        """
        if self._disabled or self._capture:
            return True
        self._check_pid()
        return self._pipeline.flush(timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Flush for up to `timeout`, then stop; what was not delivered stays on disk for the
        next Client on this spool_dir. True as flush(): everything acknowledged, nothing set
        aside or dropped since the last flush(). Later emits raise ClientClosed."""
        if self._disabled or self._capture:
            self._closed = True
            return True
        pipeline = self._pipeline
        if self._closed:
            return self._spool.is_open and pipeline.spooled() == 0 and not len(pipeline.buffer)
        deadline = time.monotonic() + timeout
        if pipeline.started or len(pipeline.buffer):
            delivered = self.flush(timeout)
        else:
            delivered = pipeline.all_acknowledged(pipeline.spooled() == 0)
        self._closed = True
        pipeline.stop(deadline)
        # Anything another thread emitted between the flush and the close: on disk, not sent.
        written_after = self._buffer.persist()
        return delivered and not written_after and not len(self._buffer)

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
        if flush_s > 0 and not self._closed and (self._pipeline.started or len(self._buffer)):
            # Short-lived scripts, containers, multiprocessing children: deliver what we can
            # within the bound; the rest stays on disk for the next run.
            try:
                self.close(flush_s)
            except Exception:
                log.exception("client_flush_at_exit_failed")
        self._buffer.persist_at_exit()


def _as_event(prepared: Prepared) -> Event:
    """A captured event as the server would store it (data as JSON gives it back)."""
    event = loads_exact(event_json(prepared))
    return Event(key=event["key"], data=event["data"], id=event["id"], timestamp=event["timestamp"])


__all__ = ["BeforeSendFailed", "Client", "ClientClosed", "EventsRejected"]
