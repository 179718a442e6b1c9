"""The events between `emit()` and the disk: the one owner of the in-memory buffer, with its
lock, and of the spooler thread that moves it to the spool every `spool_interval`.

Events leave memory only once the spool holds them. While the spool refuses them (full disk,
spool_max_bytes, I/O errors, a spool_dir that cannot be opened), they wait in memory, up to
`Config.max_memory_events`; beyond that the newest are dropped, counted and reported through
on_error, at most once per _DROP_REPORT_PERIOD_S. Only this object appends to or removes
from the buffer: `emit()` and `emit_and_send()` hand it prepared events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from tlytics.client.config import Config, seconds
from tlytics.client.delivery import SenderStats
from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.prepare import Prepared, entry_bytes
from tlytics.errors import EventsDropped, SpoolError, SpoolFull, TlyticsError

log = logging.getLogger("tlytics.client")

# While the spool refuses events: drops are reported at most this often (the first at once),
# and the spooler (or a write-through emit) retries it at most this often: each retry writes
# the whole backlog again, up to max_memory_events, which must not eat the application's CPU.
_DROP_REPORT_PERIOD_S = 1.0
_REFUSED_RETRY_PERIOD_S = 0.25


class SpoolBuffer:
    """Prepared events in memory, moved to the spool by `persist()` (the spooler thread's
    job, or the caller's with `write_through`)."""

    def __init__(
        self,
        spool: ForkSafeSpool,
        config: Config,
        stats: SenderStats,
        report: Callable[[TlyticsError], None],
        wake_sender: threading.Event,
        *,
        write_through: bool,
    ) -> None:
        self._spool = spool
        self._config = config
        self._stats = stats
        self._report = report
        self._wake_sender = wake_sender
        self.write_through = write_through
        self._events: deque[Prepared] = deque()
        self._lock = threading.Lock()  # guards _events: emit threads append, persist removes
        self._persist_lock = threading.Lock()  # one persist at a time, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsent_estimate = 0
        self.refusal: str | None = None  # why the spool refuses events, while it does
        self._last_refused_at = 0.0
        self._unreported_drops = 0
        self._last_drop_report_at: float | None = None

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: Prepared) -> None:
        """Keep `event` until the spool takes it; with write_through, write it now (unless the
        spool refused events less than _REFUSED_RETRY_PERIOD_S ago)."""
        with self._lock:
            if self.refusal is not None and len(self._events) >= self._config.max_memory_events:
                self._count_dropped(1)
            else:
                self._events.append(event)
        if self.write_through and (
            self.refusal is None or time.monotonic() - self._last_refused_at >= _REFUSED_RETRY_PERIOD_S
        ):
            self.persist()

    def start_spooler(self) -> None:
        if self._thread is None and not self.write_through:
            self._thread = threading.Thread(target=self._spool_loop, name="tlytics-spooler", daemon=True)
            self._thread.start()

    def stop_spooler(self, timeout_s: float) -> bool:
        """Stop the spooler thread; True when it ended within `timeout_s`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout_s))
            return not self._thread.is_alive()
        return True

    def retry_now(self) -> None:
        """Let the next persist() try the spool at once (an explicit flush deserves it)."""
        self._last_refused_at = 0.0

    def _spool_loop(self) -> None:
        interval_s = seconds(self._config.spool_interval)
        while not self._stop.wait(interval_s):
            try:
                if self.refusal is not None and time.monotonic() - self._last_refused_at < _REFUSED_RETRY_PERIOD_S:
                    self._report_drops()  # drops made by emit() meanwhile
                    continue
                self.persist()
            except Exception:  # the thread must outlive any one failure
                log.exception("client_spooler_failed")

    def persist(self) -> int:
        """Move everything in memory to the spool; return how many events were written."""
        with self._persist_lock:
            with self._lock:
                # A copy: until the spool holds them these events stay where flush() and a
                # clean exit see them. Only this method removes, from the left, under both locks.
                waiting = list(self._events)
            if not waiting:
                self._report_drops()
                return 0
            max_batch = self._config.max_batch
            entries = [entry_bytes(waiting[start : start + max_batch]) for start in range(0, len(waiting), max_batch)]
            try:
                if self._spool.size_bytes() >= self._config.spool_max_bytes:
                    raise SpoolFull(f"client spool is full ({self._config.spool_max_bytes} bytes)")
                self._spool.append_many(entries)
            except (SpoolError, OSError) as exc:
                self._refused(exc)
                return 0
            with self._lock:
                for _ in range(len(waiting)):
                    self._events.popleft()
            if self.refusal is not None:
                log.warning("client spool takes events again; %d kept in memory were written", len(waiting))
                self._report_drops(episode_over=True)
                self.refusal = None
            else:
                self._report_drops()
            self._unsent_estimate += len(waiting)
            if self._unsent_estimate >= max_batch:
                self._unsent_estimate = 0
                self._wake_sender.set()
            return len(waiting)

    def refused(self, exc: BaseException) -> None:
        """The spool cannot be used (it did not open): keep what is in memory, up to the bound."""
        with self._persist_lock:
            self._refused(exc)

    def _refused(self, exc: BaseException) -> None:
        self._last_refused_at = time.monotonic()
        if self.refusal is None:
            log.warning(
                "client spool cannot take events (%s); keeping up to %d in memory", exc, self._config.max_memory_events
            )
        self.refusal = str(exc)
        excess = 0
        with self._lock:
            while len(self._events) > self._config.max_memory_events:
                self._events.pop()  # the newest: the oldest keep their place in line
                excess += 1
        if excess:
            self._count_dropped(excess)
        self._report_drops()

    def _count_dropped(self, count: int) -> None:
        with self._stats.lock:
            self._stats.dropped += count
            self._unreported_drops += count

    def _report_drops(self, *, episode_over: bool = False, final: bool = False) -> None:
        """Tell on_error how many events were dropped: the first drop of an episode at once,
        then at most once per _DROP_REPORT_PERIOD_S, and the rest when the episode ends."""
        now = time.monotonic()
        with self._stats.lock:
            count = self._unreported_drops
            due = (
                final
                or episode_over
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
                    f"dropped {count} newest events: the spool cannot take them ({self.refusal or 'refused'})"
                    f" and {self._config.max_memory_events} are waiting in memory",
                    count=count,
                )
            )

    def persist_at_exit(self) -> None:
        """Write what memory holds; what the spool still refuses dies with the process:
        counted and reported."""
        try:
            self.persist()
        except Exception:
            log.exception("client_persist_at_exit_failed")
        with self._lock:
            lost = len(self._events)
            self._events.clear()
        if lost:
            self._count_dropped(lost)
        self._report_drops(final=True)
