"""Group commit: appends that arrive while a spool transaction is in flight wait together
and are written by the next single transaction, so N concurrent requests pay one disk sync
instead of N. Each waiter is released only after the transaction holding its entry committed.

The transaction writes one spool entry for the whole group (`group_spool_entries`: the requests'
entries joined as they are, each keeping its received_at), not one per request: the spool's
row (its indexes and triggers) and the writer's read, decode and removal of it are paid once
per group. The group commits or fails as one: a request answered with an error (a full spool)
has nothing stored, and neither has any request of its group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

from tlytics.errors import SpoolError, SpoolFull
from tlytics.spool.entry import group_spool_entries
from tlytics.spool.spool import Spool


class GroupCommitter:
    """Feeds a Spool from the event loop, one transaction per group of concurrent appends."""

    def __init__(
        self,
        spool: Spool,
        *,
        on_committed: Callable[[int], None] | None = None,
        commit_in_loop: bool = False,
    ) -> None:
        self._spool = spool
        self._on_committed = on_committed
        # In the loop's own thread a group commit (no fsync) takes a fraction of a millisecond.
        # On a worker thread it took several: SQLite releases the GIL at every step, and each
        # time the thread waited for the busy event loop to hand it back. With fsync (spool
        # sync "full") the thread is still right: the loop must not stall on the disk.
        self._commit_in_loop = commit_in_loop
        # One thread owns the spool's append connection; the loop never waits on disk.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-append")
        # The group being gathered: its entries, their event count, and one future per append
        # (not one for the group: a cancelled request must not cancel its group's answers).
        self._entries: list[bytes] = []
        self._events = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # When the last group failed to commit (monotonic), for /health; None once one succeeds.
        self.failing_since: float | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="spool-group-commit")

    def append(self, entry: bytes, event_count: int) -> asyncio.Future[None]:
        """A future done once `entry` is committed to the spool, or failed with a SpoolError if
        it was not: `await committer.append(entry, n)`. Not a coroutine: a request's handler
        awaits the future itself, one frame fewer to enter and to resume per request.
        Raises SpoolError at once while the committer shuts down."""
        if self._closing:
            raise SpoolError("server is shutting down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._entries:
            self._wakeup.set()  # the first of a group: the rest find the committer awake
        self._entries.append(entry)
        self._events += event_count
        self._waiters.append(future)
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._entries:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            if self._commit_in_loop:
                await asyncio.sleep(0)  # let handlers that are ready now join this group
            entries, waiters, events = self._entries, self._waiters, self._events
            self._entries, self._waiters, self._events = [], [], 0
            try:
                if self._commit_in_loop:
                    self._commit(entries)
                else:
                    await loop.run_in_executor(self._executor, self._commit, entries)
            except Exception as exc:
                error = exc if isinstance(exc, SpoolError) else SpoolError(str(exc))
                # A full spool is backpressure, not a failure: it clears as the writer drains.
                # It is also the latest cause: a failure before it no longer stands for it.
                if isinstance(error, SpoolFull):
                    self.failing_since = None
                    self.last_error = None
                else:
                    if self.failing_since is None:
                        self.failing_since = time.monotonic()
                    self.last_error = str(error)
                for future in waiters:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.failing_since = None
            self.last_error = None
            for future in waiters:
                if not future.done():
                    future.set_result(None)
            if self._on_committed is not None:
                self._on_committed(events)

    def _commit(self, entries: list[bytes]) -> None:
        """One transaction holding every entry of the group, as one spool entry (or a few, for
        a group past GROUP_ENTRY_MAX_BYTES)."""
        self._spool.append_many(group_spool_entries(entries))

    async def close(self) -> None:
        """Commit what is pending, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)
