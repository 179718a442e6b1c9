"""The writer: drains the spool into the store, one store transaction per batch.

All SQLite work happens in `drain_batch`, a plain function run by a Drainer: in a separate
process by default (ProcessDrainer), so the store's work runs on the second core instead of
competing with the HTTP handlers for the GIL, or on one dedicated thread (ThreadDrainer).
Either owns the store's write connection; the coroutine around it only decides when to drain. Spool
entries are removed only after the store committed their events, so a crash between the two
replays them, and the unique id makes the replay harmless. A failing batch stays in the spool
and is retried with backoff; it is never dropped.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog

from tlytics.errors import StoreError
from tlytics.ingest import writer_process
from tlytics.ingest.codec import decode_spool_entry
from tlytics.ingest.writer_process import WorkerSettings
from tlytics.spool import Spool
from tlytics.store import EventFilter, Store, StoreRow

log = structlog.get_logger("tlytics.writer")

T = TypeVar("T")


class ErasureIncomplete(StoreError):
    """An erasure stopped early: `deleted` events were erased for good, the others not yet."""

    def __init__(self, message: str, *, deleted: int) -> None:
        super().__init__(message)
        self.deleted = deleted


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What one drained batch did."""

    entries: int
    events: int
    inserted: int
    quarantined: int
    pid: int = 0  # the process that did the work


def decode_entry(value: bytes) -> list[StoreRow]:
    """Turn one spool entry (as written by the ingest handlers) into store rows.

    `data` stays the JSON text it was spooled as; it is not decoded and re-encoded.
    """
    received_at_us, events = decode_spool_entry(value)
    return [
        (bytes.fromhex(id_hex), key, timestamp_us, received_at_us, bytes(data).decode())
        for id_hex, key, timestamp_us, data in events
    ]


def drain_batch(
    spool: Spool, store: Store, quarantine: Spool, *, max_entries: int, max_events: int
) -> DrainResult:
    """Move the oldest spool entries (up to `max_events` events) into the store, then remove them.

    Call from the writer thread only. Raises on store or spool failure, leaving the spool as it was.
    """
    keys: list[int] = []
    rows: list[StoreRow] = []
    quarantined = 0
    for key, value in spool.iter_oldest(max_entries):
        try:
            entry_rows = decode_entry(value)
        except (ValueError, TypeError, KeyError) as exc:
            # Keep the bytes for a person to look at; one bad entry must not wedge the queue.
            quarantine.append(value)
            spool.remove([key])
            quarantined += 1
            log.error("spool_entry_quarantined", spool_key=key, error=str(exc), bytes=len(value))
            continue
        keys.append(key)
        rows.extend(entry_rows)
        if len(rows) >= max_events:
            break
    inserted = store.insert(rows) if rows else 0
    if keys:
        spool.remove(keys)
    elif not quarantined:
        spool.checkpoint()  # drained: let the spool's WAL shrink back
    return DrainResult(
        entries=len(keys), events=len(rows), inserted=inserted, quarantined=quarantined, pid=os.getpid()
    )


class Drainer(Protocol):
    """Runs drain_batch somewhere other than the event loop."""

    async def drain_batch(self) -> DrainResult: ...

    async def delete_matching(self, where: EventFilter, max_rows: int, remember_ids: bool) -> int: ...

    async def close(self) -> None: ...


class ThreadDrainer:
    """drain_batch on one dedicated thread of this process."""

    def __init__(self, spool: Spool, store: Store, quarantine: Spool, *, max_entries: int = 1_000, max_events: int = 5_000) -> None:
        self._call = functools.partial(
            drain_batch, spool, store, quarantine, max_entries=max_entries, max_events=max_events
        )
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")

    async def drain_batch(self) -> DrainResult:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call)

    async def delete_matching(self, where: EventFilter, max_rows: int, remember_ids: bool) -> int:
        call = functools.partial(self._store.delete_matching, where, max_rows=max_rows, remember_ids=remember_ids)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread meanwhile, so a process spawned inside inherits
    them blocked (the mask survives fork and exec) and cannot die of them before it ignores
    them; what arrives meanwhile stays pending for this process and is handled afterwards.
    CPython's resource tracker guards its own spawn this way (bpo-33613)."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: no process group signals either
        yield
        return
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ProcessDrainer:
    """drain_batch in a writer process of its own, restarted if it dies.

    If the server is killed, the worker sees its task pipe close and exits after the batch in
    hand; a batch it finishes is committed before its spool entries are removed, so the crash
    rule holds whichever process dies when.

    The pool spawns its process on the first submit (and a new pool after a crash), so every
    submit goes through `_submit`, which spawns with the stop signals blocked: a Ctrl-C to the
    whole process group while the new process is still importing must not kill it before the
    server's final drain.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded server
            initializer=writer_process.initialize,
            initargs=(self._settings,),
        )

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        with _stop_signals_blocked():
            future: Future[T] = self._executor.submit(fn, *args)
        return await asyncio.wrap_future(future)

    async def drain_batch(self) -> DrainResult:
        try:
            return await self._submit(writer_process.drain)
        except BrokenProcessPool:
            log.error("writer_process_died_restarting")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            raise

    async def delete_matching(self, where: EventFilter, max_rows: int, remember_ids: bool) -> int:
        return await self._submit(writer_process.delete_matching, where, max_rows, remember_ids)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)


RETENTION_CHUNK = 2_000
ERASE_CHUNK = 5_000


class Writer:
    """Drains the spool every flush period, or sooner once the backlog passes a threshold."""

    def __init__(
        self,
        drainer: Drainer,
        *,
        flush_period_s: float,
        backlog_threshold_events: int = 20_000,
        retry_delay_max_s: float = 5.0,
        on_batch: Callable[[DrainResult | None], None] | None = None,
        retention_s: float | None = None,
    ) -> None:
        self._retention_s = retention_s
        self._drainer = drainer
        # Told of every batch written (None for a failed one), e.g. to count it in metrics.
        self._on_batch = on_batch
        self._flush_period_s = flush_period_s
        self._backlog_threshold_events = backlog_threshold_events
        self._retry_delay_max_s = retry_delay_max_s
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._backlog_events = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.worker_pid = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="writer")

    def notify_appended(self, event_count: int) -> None:
        """Called when events were spooled; wakes the writer early when the backlog is large."""
        self._backlog_events += event_count
        if self._backlog_events >= self._backlog_threshold_events:
            self._wake.set()

    async def _run(self) -> None:
        # Drain at once on start: entries left by a crash are replayed before anything else.
        while not self._stopping:
            ok = await self.drain(deadline=None)
            if ok and self._retention_s:
                await self._apply_retention()
            delay = self._flush_period_s
            if not ok:
                delay = min(self._retry_delay_max_s, 0.1 * 2 ** min(self.consecutive_failures, 10))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    async def drain(self, *, deadline: float | None) -> bool:
        """Drain until the spool is empty or `deadline` (monotonic) passes; False on a failure."""
        async with self._drain_lock:
            self._backlog_events = 0
            while deadline is None or time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    result = await self._drainer.drain_batch()
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
                    return False
                self.consecutive_failures = 0
                self.last_error = None
                self.worker_pid = result.pid
                if result.entries == 0 and result.quarantined == 0:
                    return True
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
                    return True
            return False  # the deadline passed with entries still spooled

    async def _apply_retention(self) -> None:
        """Delete events older than the retention period, in small transactions so ingest
        never waits long for the store."""
        assert self._retention_s is not None
        cutoff_us = int((time.time() - self._retention_s) * 1_000_000)
        deleted = 0
        try:
            for _ in range(1_000):  # bounded per round; the next round continues
                chunk = await self._drainer.delete_matching(
                    EventFilter(until_us=cutoff_us), RETENTION_CHUNK, False
                )
                deleted += chunk
                if chunk < RETENTION_CHUNK or self._stopping:
                    break
                await asyncio.sleep(0)
        except Exception as exc:
            log.error("retention_failed", error=str(exc))
        if deleted:
            log.info("retention_deleted", events=deleted, older_than_s=self._retention_s)

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
        deleted = 0
        while True:
            try:
                chunk = await self._drainer.delete_matching(where, ERASE_CHUNK, True)
            except (StoreError, BrokenProcessPool) as exc:
                raise ErasureIncomplete(f"deleting failed: {exc}", deleted=deleted) from exc
            deleted += chunk
            if chunk < ERASE_CHUNK:
                return deleted

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
        try:
            await self.flush(drain_timeout_s)
        finally:
            await self._drainer.close()
