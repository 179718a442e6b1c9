"""One client's machinery in one process: the buffer and its spooler thread, the sender and its
thread, the sender lease and wake file, the stats; and the waiting that flush() and close()
do on it. A forked child gets a new Pipeline (its memory holds the parent's events, which the
parent spools); the spool itself is shared by every process.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tlytics.client.buffer import SpoolBuffer
from tlytics.client.config import Config, seconds
from tlytics.client.connect import http_transport_for, transport_for
from tlytics.client.delivery import LearnedLimits, SenderStats
from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.lease import SenderLease, WakeFile
from tlytics.client.sender import Sender, Step
from tlytics.errors import TlyticsError

# How often a waiting flush() looks again when no delivery wakes it sooner.
_FLUSH_POLL_S = 0.05


class Pipeline:
    """Emitted events' way from memory to the server, for one client in this process."""

    def __init__(
        self,
        *,
        config: Config,
        spool: ForkSafeSpool,
        dead_letter: ForkSafeSpool,
        destination: Path,
        limits: LearnedLimits,
        threadless: bool,
        report: Callable[[TlyticsError], None],
    ) -> None:
        self._config = config
        self._spool = spool
        self._dead_letter = dead_letter
        self._limits = limits
        self._threadless = threadless
        self._report = report
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._sender_thread: threading.Thread | None = None
        self.sender: Sender | None = None
        self._inline_send_lock = threading.Lock()
        self.started = False
        self.stats = SenderStats()
        self._given_up_at_last_flush = 0
        self.lease = SenderLease(destination / "sender.lock")
        self.wake_file = WakeFile(destination / "wake")
        write_through = threadless or seconds(config.spool_interval) == 0
        self.buffer = SpoolBuffer(spool, config, self.stats, report, self._wake, write_through=write_through)

    def ensure_started(self) -> None:
        if self.started:
            return
        with self._start_lock:
            if self.started:
                return
            self.sender = Sender(
                spool=self._spool,
                dead_letter=self._dead_letter,
                config=self._config,
                lease=self.lease,
                wake_file=self.wake_file,
                limits=self._limits,
                new_transport=functools.partial(transport_for, self._config),
                report=self._report,
                wake=self._wake,
                stop=self._stop,
                progress=self._progress,
                stats=self.stats,
            )
            if not self._threadless:
                self._sender_thread = threading.Thread(target=self.sender.run, name="tlytics-sender", daemon=True)
                self._sender_thread.start()
                self.buffer.start_spooler()
            self.started = True

    def spooled(self) -> int:
        """Entries on disk; none while the spool cannot be opened."""
        return self._spool.count() if self._spool.is_open else 0

    def all_acknowledged(self, waited_out: bool) -> bool:
        """flush()'s answer: True when the wait ended with nothing left and nothing was given
        up on (set aside, dropped) since the last flush()."""
        given_up = self.stats.given_up()
        none_given_up = given_up == self._given_up_at_last_flush
        self._given_up_at_last_flush = given_up
        return waited_out and none_given_up

    def flush(self, timeout_s: float) -> bool:
        """Client.flush() once the client is known to be a real one in this process."""
        deadline = time.monotonic() + timeout_s
        attempts_before = self.stats.attempts
        if not self._spool.is_open and self._spool.try_open(now=True):
            self.buffer.retry_now()  # the spooler need not wait to write what is in memory
        self.buffer.persist()
        if len(self.buffer) and not self._spool.is_open:
            return self.all_acknowledged(False)  # nothing can leave before the spool opens
        self.ensure_started()
        if self._threadless:
            return self._flush_in_this_thread(deadline)
        self._wake.set()
        self.wake_file.ring()  # the sender may be another process's
        while True:
            if not len(self.buffer) and self.spooled() == 0:
                return self.all_acknowledged(True)
            if self.stats.server_unreachable and self.stats.attempts > attempts_before:
                # Nobody to retry against: waiting out the deadline would only hold up the app.
                return self.all_acknowledged(False)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.all_acknowledged(False)
            with self._progress:
                self._progress.wait(min(remaining, _FLUSH_POLL_S))

    def _flush_in_this_thread(self, deadline: float) -> bool:
        """flush() without a sender thread: send batch after batch until the spool is empty,
        a delivery fails, or the deadline passes (no request outlives it by much)."""
        assert self.sender is not None
        with self._inline_send_lock:
            request_timeout_s = min(seconds(self._config.timeout), max(deadline - time.monotonic(), 0.1))
            transport = self._config.transport or http_transport_for(self._config, timeout_s=request_timeout_s)
            try:
                while len(self.buffer) or self.spooled():
                    if time.monotonic() >= deadline:
                        break
                    self.buffer.persist()
                    step, _ = self.sender.step(transport)
                    if step is not Step.SENT:
                        break  # failed, or another process holds the lease: stays on disk
                else:
                    return self.all_acknowledged(True)
            finally:
                transport.close()
        return self.all_acknowledged(False)

    def stop(self, deadline: float) -> None:
        """Stop the threads (by `deadline`, a monotonic time) and let another process send."""
        self._stop.set()
        self._wake.set()
        stopped = self.buffer.stop_spooler(deadline - time.monotonic())
        if self._sender_thread is not None:
            self._sender_thread.join(max(0.0, deadline - time.monotonic()))
            stopped = stopped and not self._sender_thread.is_alive()
        if stopped:
            self.lease.release()
