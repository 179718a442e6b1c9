"""A durable FIFO of byte entries on diskcache, read without being consumed.

Entries are only ever removed by key once the caller has made them safe elsewhere (peek →
deliver → remove): a destructive read would lose data on a crash between the read and the
delivery. Values stay bytes (never pickled) and stay inside diskcache's SQLite file, where
they share its transactions and fsync, instead of the unsynced side files diskcache uses for
values of 32 KB and more by default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from tlytics.errors import SpoolError, SpoolFull
from tlytics.spool.diskcache_adapter import BACKEND_ERRORS, DiskcacheQueue

SpoolSync = Literal["normal", "full"]

_SQLITE_SYNCHRONOUS = {"normal": 1, "full": 2}
_WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024
# With checkpoint_on_append=False, appends still checkpoint once the WAL holds this much, so a
# spool nobody drains cannot grow its WAL without bound; and at most half the disk reserve
# (min_free_bytes): a checkpoint copies the WAL into the database file, which takes that much
# disk again before the WAL is reset, and the reserve must cover it.
_BACKSTOP_CHECKPOINT_BYTES = 64 * 1024 * 1024
_SQLITE_CHECKPOINT_PAGES = 1000  # SQLite's own wal_autocheckpoint
# How long a measure of the spool's size and of the disk's free space is reused by appends,
# and what each appended entry is counted as beyond its value (SQLite's row and index cost).
_MEASURE_EVERY_S = 0.1
_ROW_OVERHEAD_BYTES = 128


def _wal_size_limit_bytes(min_free_bytes: int) -> int:
    if not min_free_bytes:
        return _WAL_SIZE_LIMIT_BYTES
    return min(_WAL_SIZE_LIMIT_BYTES, max(min_free_bytes // 4, 64 * 1024))


@contextmanager
def _spool_errors(action: str) -> Iterator[None]:
    """Translate a backend error inside the block into SpoolError, keeping it as the cause:
    callers of the spool handle one error type and never need to know diskcache."""
    try:
        yield
    except BACKEND_ERRORS as exc:
        raise SpoolError(f"spool {action} failed: {exc}") from exc


class Spool:
    """A process- and thread-safe durable queue of byte entries with integer keys, oldest first."""

    def __init__(
        self,
        directory: str | Path,
        *,
        sync: SpoolSync = "normal",
        max_bytes: int | None = None,
        min_free_bytes: int = 0,
        busy_timeout_s: float = 30.0,
        checkpoint_on_append: bool = True,
    ) -> None:
        if sync not in _SQLITE_SYNCHRONOUS:
            raise ValueError(f"spool sync must be 'normal' or 'full', not {sync!r}")
        self.directory = Path(directory)
        self.sync = sync
        self.max_bytes = max_bytes
        # Appends stop while the disk has less than this free: removing entries needs a little
        # room too (SQLite writes the deletion to its WAL), and a spool that filled its disk
        # to the last byte could never be drained again.
        self.min_free_bytes = min_free_bytes
        # SQLite checkpoints the WAL in whichever commit takes it past 1,000 pages: in the
        # server that was a group commit, stalling the event loop for milliseconds (half the
        # spool's CPU in the server went to it). With this False the appending connection only
        # checkpoints past a backstop (a writer that stopped draining), and whoever drains the
        # spool checkpoints after each removal (the writer process, on the other core).
        self._checkpoint_on_append = checkpoint_on_append
        self._tuned_connection: object | None = None
        # The last measure of the spool's size and the disk's free space (see _check_room).
        self._measured_at = -_MEASURE_EVERY_S
        self._measured_size = self._measured_free = self._appended_since = 0
        with _spool_errors(f"open at {self.directory}"):
            self._queue = DiskcacheQueue(
                str(self.directory),
                timeout_s=busy_timeout_s,
                synchronous=_SQLITE_SYNCHRONOUS[sync],
                # Give the disk back after a burst: the WAL is cut to this size once checkpointed
                # (on a small disk, to a part of the reserve, so a drained spool frees it).
                journal_size_limit=_wal_size_limit_bytes(min_free_bytes),
            )

    def append(self, value: bytes) -> int:
        """Append one entry durably and return its key."""
        return self.append_many([value])[0]

    def append_many(self, values: Sequence[bytes]) -> list[int]:
        """Append several entries in one transaction (one disk sync for all); return their keys."""
        if self.max_bytes is not None or self.min_free_bytes:
            self._check_room(sum(len(value) for value in values))
        self._tune_connection()
        with _spool_errors("append"), self._queue.transact():
            # Two statements for the whole group rather than Cache.push per value: push() runs
            # a dozen Python-level steps per value, and under load that Python time, waiting
            # for the GIL, made group commits three times slower (see diskcache_adapter).
            return self._queue.append(values)

    def _tune_connection(self) -> None:
        """Set the auto-checkpoint threshold of this thread's connection (per connection, not
        stored in the file, so other processes' connections keep their own): raised for an
        appender that leaves checkpoints to the drainer, and kept within half the disk reserve
        for any connection that writes (appends and removals), so the WAL never outgrows it."""
        if self._checkpoint_on_append and not self.min_free_bytes:
            return  # SQLite's default
        with _spool_errors("open"):
            connection = self._queue.connection()  # diskcache's connection for this thread
            if connection is not self._tuned_connection:
                self._queue.set_autocheckpoint(self._backstop_checkpoint_pages())
                self._tuned_connection = connection

    def _backstop_checkpoint_pages(self) -> int:
        page_size = self._queue.page_size
        backstop = (
            _BACKSTOP_CHECKPOINT_BYTES if not self._checkpoint_on_append else _SQLITE_CHECKPOINT_PAGES * page_size
        )
        if self.min_free_bytes:
            backstop = min(backstop, self.min_free_bytes // 2)
        return max(1, backstop // page_size)

    def _check_room(self, adding: int) -> None:
        """Raise SpoolFull when the spool is at `max_bytes` or the disk at its reserve.

        Measuring both (two queries and a statvfs) on every group commit cost more than the
        commit's own statements, so a measure is reused for up to _MEASURE_EVERY_S, counting
        what was appended since on top of it (removals are not counted: the estimate only errs
        towards full). An estimate that says "full" is measured again before it refuses, so a
        spool the writer just drained takes appends again at once.
        """
        now = time.monotonic()
        fresh = now - self._measured_at < _MEASURE_EVERY_S
        if not fresh or self._room_estimate_short(adding):
            self._measured_size = self.size_bytes() if self.max_bytes is not None else 0
            self._measured_free = self.disk_free_bytes() if self.min_free_bytes else 0
            self._appended_since = 0
            self._measured_at = now
            size, free = self._measured_size, self._measured_free
            if self.max_bytes is not None and size >= self.max_bytes:
                raise SpoolFull(f"spool holds {size} bytes, its limit is {self.max_bytes}")
            if self.min_free_bytes and free < self.min_free_bytes + adding:
                raise SpoolFull(f"disk has {free} bytes free; {self.min_free_bytes} are kept in reserve")
        self._appended_since += adding + _ROW_OVERHEAD_BYTES

    def _room_estimate_short(self, adding: int) -> bool:
        if self.max_bytes is not None and self._measured_size + self._appended_since >= self.max_bytes:
            return True
        return bool(self.min_free_bytes) and (self._measured_free - self._appended_since < self.min_free_bytes + adding)

    def peek(self, max_entries: int) -> list[tuple[int, bytes]]:
        """Return up to `max_entries` of the oldest entries as (key, value), leaving them in place."""
        return list(self.iter_oldest(max_entries))

    def iter_oldest(self, max_entries: int, *, after: int = -1) -> Iterator[tuple[int, bytes]]:
        """Yield up to `max_entries` of the oldest entries (with keys above `after`), oldest
        first, reading each only when asked for: a caller that stops early (the writer, once it
        has enough events) does not pay for reading the rest. Nothing is removed."""
        with _spool_errors("read"):
            # One query for the whole batch; a get() per key cost a round trip per entry.
            yield from self._queue.iter_oldest(max_entries, after)

    def remove(self, keys: Iterable[int]) -> None:
        """Remove entries by key in one transaction; keys already gone are ignored."""
        keys = list(keys)
        self._tune_connection()
        with _spool_errors("remove"), self._queue.transact():
            # A few DELETE statements instead of one delete() per key: the write lock is
            # held for far less time, so appends from request handlers rarely wait for it.
            self._queue.remove(keys)

    def checkpoint(self) -> None:
        """Copy the WAL into the database file without waiting for anyone, so the WAL can be
        reset (and cut to its size limit) by the next append; the writer calls it after each
        batch it removed (see checkpoint_on_append)."""
        with _spool_errors("checkpoint"):
            self._queue.checkpoint()

    def oldest_age_s(self) -> float:
        """Seconds since the oldest waiting entry was appended; 0 when empty."""
        with _spool_errors("read"):
            appended_at = self._queue.oldest_store_time()
        return max(0.0, time.time() - appended_at) if appended_at is not None else 0.0

    def disk_free_bytes(self) -> int:
        """Bytes free on the spool's file system (for an unprivileged process)."""
        with _spool_errors("statvfs"):
            stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize

    def count(self) -> int:
        """Number of entries waiting."""
        with _spool_errors("count"):
            return self._queue.count()

    def size_bytes(self) -> int:
        """Bytes the spool takes on disk."""
        with _spool_errors("size"):
            return self._queue.volume()

    def close(self) -> None:
        """Close this thread's connection (other threads' close with their thread)."""
        with _spool_errors("close"):
            self._queue.close()
