"""A durable FIFO of byte entries on diskcache, read without being consumed.

Entries are only ever removed by key once the caller has made them safe elsewhere (peek →
deliver → remove): a destructive read would lose data on a crash between the read and the
delivery. Values stay bytes (never pickled) and stay inside diskcache's SQLite file, where
they share its transactions and fsync, instead of the unsynced side files diskcache uses for
values of 32 KB and more by default.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import diskcache

from tlytics.errors import SpoolError, SpoolFull

SpoolSync = Literal["normal", "full"]

_SQLITE_SYNCHRONOUS = {"normal": 1, "full": 2}
_MODE_RAW = 1  # diskcache.core.MODE_RAW
# Larger than any entry we accept, so diskcache never writes a value to a side file.
_NEVER_A_SIDE_FILE = 1 << 40


class Spool:
    """A process- and thread-safe durable queue of byte entries with integer keys, oldest first."""

    def __init__(
        self,
        directory: str | Path,
        *,
        sync: SpoolSync = "normal",
        max_bytes: int | None = None,
        busy_timeout_s: float = 30.0,
    ) -> None:
        if sync not in _SQLITE_SYNCHRONOUS:
            raise ValueError(f"spool sync must be 'normal' or 'full', not {sync!r}")
        self.directory = Path(directory)
        self.sync = sync
        self.max_bytes = max_bytes
        try:
            self._cache = diskcache.Cache(
                str(self.directory),
                timeout=busy_timeout_s,
                # The default policy evicts entries past size_limit: silent data loss.
                eviction_policy="none",
                disk_min_file_size=_NEVER_A_SIDE_FILE,
                sqlite_synchronous=_SQLITE_SYNCHRONOUS[sync],
            )
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise SpoolError(f"cannot open spool at {self.directory}: {exc}") from exc

    def append(self, value: bytes) -> int:
        """Append one entry durably and return its key."""
        return self.append_many([value])[0]

    def append_many(self, values: Sequence[bytes]) -> list[int]:
        """Append several entries in one transaction (one disk sync for all); return their keys."""
        if self.max_bytes is not None and self.size_bytes() >= self.max_bytes:
            raise SpoolFull(f"spool holds {self.size_bytes()} bytes, its limit is {self.max_bytes}")
        try:
            with self._cache.transact():
                return [self._cache.push(value) for value in values]
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise SpoolError(f"spool append failed: {exc}") from exc

    def peek(self, max_entries: int) -> list[tuple[int, bytes]]:
        """Return up to `max_entries` of the oldest entries as (key, value), leaving them in place."""
        entries: list[tuple[int, bytes]] = []
        try:
            # One query for the whole batch; a get() per key cost a round trip per entry.
            # Integer keys are the queue's (push); values are raw blobs since side files are off.
            rows = self._cache._sql(
                "SELECT key, mode, value FROM Cache WHERE raw = 1 AND key >= 0"
                " AND typeof(key) = 'integer' ORDER BY key LIMIT ?",
                (max_entries,),
            ).fetchall()
            for key, mode, value in rows:
                if mode == _MODE_RAW and isinstance(value, bytes):
                    entries.append((key, value))
                else:  # written by another configuration: let diskcache decode it
                    decoded = self._cache.get(key)
                    if isinstance(decoded, bytes):
                        entries.append((key, decoded))
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise SpoolError(f"spool read failed: {exc}") from exc
        return entries

    def remove(self, keys: Iterable[int]) -> None:
        """Remove entries by key in one transaction; keys already gone are ignored."""
        try:
            with self._cache.transact():
                for key in keys:
                    self._cache.delete(key)
        except (sqlite3.Error, OSError, diskcache.Timeout) as exc:
            raise SpoolError(f"spool remove failed: {exc}") from exc

    def count(self) -> int:
        """Number of entries waiting."""
        return int(len(self._cache))

    def size_bytes(self) -> int:
        """Bytes the spool takes on disk."""
        return int(self._cache.volume())

    def close(self) -> None:
        """Close this thread's connection (other threads' close with their thread)."""
        self._cache.close()
