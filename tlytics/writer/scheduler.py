"""The writer's schedule: when to drain, retry, apply retention and erase; what runs is
the executor's business (see executor.py) and how, the writer functions' (drain, retention,
erasure).

It drains every flush period, or sooner once the backlog passes a threshold, and once more on
shutdown; a failing batch stays in the spool and is retried with capped exponential backoff,
never dropped. Once a small batch has caught up with the spool, what arrived meanwhile is
drained a moment later (CATCH_UP_PAUSE_S), not chased batch after batch. An erasure drains the
spool first, so nothing acknowledged before it is stored after it.

The writer opens the store as it starts, not only once it has events to write: opening is
what starts the backfill of a newly declared property (`--property`), which a server that
receives no events must run too. An open that fails (PostgreSQL down) is tried again each
round; the first batch with events opens it anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress

import structlog

from tlytics.store import EventFilter
from tlytics.writer.drain import DrainResult, drain_batch
from tlytics.writer.erasure import ErasureIncomplete, erase_stored
from tlytics.writer.executor import WriteExecutor
from tlytics.writer.resources import open_store
from tlytics.writer.retention import apply_retention

log = structlog.get_logger("tlytics.writer")

# After a small batch that held all the spool had, the periodic drain waits this long (at most
# the flush period) before the next one. Chasing the entries that arrived during a batch at once
# made batches of a few entries each, one after another: at 1 event per request those tail
# batches held a third of the entries and cost two thirds of the writer's CPU (every batch has
# its store and spool transactions, its checkpoint and its hand-off to the writer process).
# A batch of a tenth of the batch size or more carries those costs well: no pause after it.
CATCH_UP_PAUSE_S = 0.25
SMALL_BATCH_SHARE = 10
_EMPTY, _CAUGHT_UP, _FAILED, _OUT_OF_TIME = "empty", "caught up", "failed", "out of time"


class WriteScheduler:
    """Drains the spool every flush period, or sooner once the backlog passes a threshold."""

    def __init__(
        self,
        executor: WriteExecutor,
        *,
        flush_period_s: float,
        batch_max_entries: int,
        batch_max_events: int,
        backlog_threshold_events: int = 20_000,
        retry_delay_max_s: float = 5.0,
        on_batch: Callable[[DrainResult | None], None] | None = None,
        retention_s: float | None = None,
    ) -> None:
        self._executor = executor
        self._flush_period_s = flush_period_s
        # One drained batch: at most this many spool entries, and about this many events
        # (a batch stops after the entry that reaches it).
        self._batch_max_entries = batch_max_entries
        self._batch_max_events = batch_max_events
        self._backlog_threshold_events = backlog_threshold_events
        self._retry_delay_max_s = retry_delay_max_s
        # Told of every batch written (None for a failed one), e.g. to count it in metrics.
        self._on_batch = on_batch
        self._retention_s = retention_s
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._backlog_events = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.worker_pid = 0
        self._store_opened = False
        self._open_failures = 0  # opens failed in a row, before the writer process's store was opened

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="writer")

    def notify_appended(self, event_count: int) -> None:
        """Called when events were spooled; wakes the writer early when the backlog is large."""
        self._backlog_events += event_count
        if self._backlog_events >= self._backlog_threshold_events:
            self._wake.set()

    async def _run(self) -> None:
        # Drain at once on start: entries left by a crash are replayed before anything else.
        # Then the store is opened if the drain had nothing to write (its opening can take a
        # while, and the first drain must read the spool as the server starts, not after).
        while not self._stopping:
            outcome = await self._drain(deadline=None, until_empty=False)
            opened = await self._open_store()
            ok = outcome != _FAILED
            if ok and self._retention_s:
                await apply_retention(self._executor, self._retention_s, stopping=lambda: self._stopping)
            delay = self._flush_period_s
            if outcome == _CAUGHT_UP:
                delay = min(delay, CATCH_UP_PAUSE_S)
            if not ok:
                delay = min(self._retry_delay_max_s, 0.1 * 2 ** min(self.consecutive_failures, 10))
            elif not opened:
                # Not every flush period (a warning and a connection attempt each time while
                # PostgreSQL is down): backed off as a failing batch is, never sooner.
                delay = max(delay, min(self._retry_delay_max_s, 0.1 * 2 ** min(self._open_failures, 10)))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    async def _open_store(self) -> bool:
        """Have the writer open the store, once per writer process; whether it is open. A
        failure is only logged (a batch with events would meet it too, and counts it then), and
        a later round tries again, backed off."""
        if self._store_opened:
            return True
        try:
            await self._executor.execute(open_store)
        except Exception as exc:
            self._open_failures += 1
            log.warning("writer_store_not_open", error=str(exc), failures=self._open_failures)
            return False
        self._store_opened = True
        self._open_failures = 0
        return True

    async def drain(self, *, deadline: float | None) -> bool:
        """Drain until the spool is empty or `deadline` (monotonic) passes; False on a failure."""
        return await self._drain(deadline=deadline, until_empty=True) in (_EMPTY, _CAUGHT_UP)

    async def _drain(self, *, deadline: float | None, until_empty: bool) -> str:
        """Drain batch after batch until the spool is found empty (or, unless `until_empty`,
        until a batch caught up with it), a batch fails, or `deadline` passes."""
        async with self._drain_lock:
            self._backlog_events = 0
            while deadline is None or time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    result = await self._executor.execute(drain_batch, self._batch_max_entries, self._batch_max_events)
                except Exception as exc:
                    self.consecutive_failures += 1
                    self.last_error = str(exc)
                    if self._on_batch is not None:
                        self._on_batch(None)
                    log.error(
                        "writer_batch_failed",
                        error=str(exc),
                        consecutive_failures=self.consecutive_failures,
                        exc_info=True,
                    )
                    return _FAILED
                self.consecutive_failures = 0
                self.last_error = None
                if result.pid != self.worker_pid:
                    # A new writer process (one that died was replaced) has not opened its
                    # store: the round opens it, resuming a declared property's backfill
                    # that the dead one was running, events or not.
                    self._store_opened = False
                    self.worker_pid = result.pid
                if result.entries == 0 and result.quarantined == 0:
                    return _EMPTY
                if self._on_batch is not None:
                    self._on_batch(result)
                log.debug(
                    "writer_batch",
                    entries=result.entries,
                    events=result.events,
                    inserted=result.inserted,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
                if self._stopping and deadline is None:
                    return _EMPTY
                small = result.events < self._batch_max_events // SMALL_BATCH_SHARE
                if result.caught_up and small and not until_empty:
                    return _CAUGHT_UP
            return _OUT_OF_TIME  # the deadline passed with entries still spooled

    async def erase(self, where: EventFilter) -> int:
        """Delete every stored event matching `where`, for good (their ids are remembered).

        The spool is drained first, so matching events acknowledged before the erasure cannot
        be stored after it. If that drain fails or times out, nothing is erased: an erasure that
        answered while matching events still waited in the spool would be undone by the next
        drain. Raises ErasureIncomplete then, or when a chunk of the deletion fails; either way
        a retry finishes the job (erased ids stay erased).
        """
        if not await self.flush():
            raise ErasureIncomplete(
                f"the spool could not be written to the store first ({self.last_error or 'timed out'});"
                " nothing was erased",
                deleted=0,
            )
        return await erase_stored(self._executor, where)

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Drain everything spooled so far; True when the spool was emptied without failure."""
        return await self.drain(deadline=time.monotonic() + timeout_s)

    async def close(self, drain_timeout_s: float) -> None:
        """Stop the periodic loop, then drain what is left for up to `drain_timeout_s`.

        Whatever is not drained in time stays in the spool and is written at the next start.
        """
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        deadline = time.monotonic() + drain_timeout_s
        try:
            if not await self.drain(deadline=deadline) and time.monotonic() < deadline:
                # A writer process that died while idle fails the first call (its pool was
                # broken) and is replaced meanwhile: the new one drains what is left.
                await self.drain(deadline=deadline)
        finally:
            await self._executor.close()
