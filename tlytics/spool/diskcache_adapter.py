"""The one module that knows diskcache's internals: its connection (`_con`, `_sql`), its
`Cache` table and the integer key scheme of its queues (`Cache.push`).

Why not diskcache's public API: the spool's hot paths, done the public way, cost several
times more (bench/spool_api.py, one run, both ways on the same files): appending a group of
entries is one `push()` per entry (a dozen Python steps each, waiting for the GIL under load,
made group commits three times slower); reading the oldest N without consuming them is
`iterkeys()` then one `get()` per key; removing delivered entries is one `delete()` per key,
holding the write lock the whole time. Here each is one or two SQL statements.

The price is that a diskcache release could change the table or the key scheme. So the
layout is checked once at open (`DiskcacheQueue.__init__`), and a spool whose table differs
is refused with a SpoolError naming what differs, rather than read or written wrongly;
tests/test_spool_adapter.py fails on an installed diskcache whose table or queue keys differ.
Nothing else in tlytics touches diskcache's private names (Spool calls this class).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import diskcache

from tlytics.errors import SpoolError

MODE_RAW = 1  # diskcache.core.MODE_RAW: the value is stored as given (bytes), not pickled
# diskcache's table (schema version 5, diskcache 5.x), used directly below.
CACHE_COLUMNS = (
    "rowid",
    "key",
    "raw",
    "store_time",
    "expire_time",
    "access_time",
    "access_count",
    "tag",
    "size",
    "mode",
    "filename",
    "value",
)
# Cache.push (prefix=None): integer keys strictly between these, the first one in the middle.
QUEUE_MIN_KEY = 0
QUEUE_MAX_KEY = 999_999_999_999_999
FIRST_QUEUE_KEY = 500_000_000_000_000
# What diskcache and the file system raise: SQLite errors, I/O errors, and diskcache's Timeout
# when the database stays locked past the busy timeout.
BACKEND_ERRORS = (sqlite3.Error, OSError, diskcache.Timeout)
# Larger than any entry we accept, so diskcache never writes a value to a side file.
NEVER_A_SIDE_FILE = 1 << 40

_LAST_QUEUE_KEY = (
    f"SELECT key FROM Cache WHERE {QUEUE_MIN_KEY} < key AND key < {QUEUE_MAX_KEY} AND raw = 1 ORDER BY key DESC LIMIT 1"
)
_INSERT_RAW = (
    "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
    " tag, size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, 1, NULL, ?)"
)
# Keys bound in one DELETE: SQLite's limit on parameters is 999 in older builds.
_KEYS_PER_STATEMENT = 500


def _runs(keys: Sequence[int]) -> list[tuple[int, int]]:
    """The keys as runs of consecutive integers, (first, last) each, in ascending order."""
    runs: list[tuple[int, int]] = []
    for key in sorted(set(keys)):
        if runs and runs[-1][1] == key - 1:
            runs[-1] = (runs[-1][0], key)
        else:
            runs.append((key, key))
    return runs


def check_layout(cache: diskcache.Cache) -> None:
    """Raise SpoolError unless `cache` has the table and queue keys this module relies on.

    The columns come from the file (PRAGMA table_info). The key scheme is checked against
    diskcache's own reading of the same file: its peek() must find the queue's first and last
    entries where our queries do (on an empty queue there is nothing to compare)."""
    columns = tuple(row[1] for row in cache._sql("PRAGMA table_info(Cache)").fetchall())
    if columns != CACHE_COLUMNS:
        raise SpoolError(
            f"spool at {cache.directory}: diskcache {diskcache.__version__} has table Cache{columns},"
            f" the spool needs Cache{CACHE_COLUMNS}; install the diskcache version in requirements.lock"
        )
    ours = cache._sql(_LAST_QUEUE_KEY).fetchall()
    theirs = cache.peek(side="back", default=(None, None))[0]
    if (ours[0][0] if ours else None) != theirs:
        raise SpoolError(
            f"spool at {cache.directory}: diskcache {diskcache.__version__} puts the queue's last"
            f" entry at key {theirs!r}, the spool expects {ours[0][0] if ours else None!r}"
        )


class DiskcacheQueue:
    """diskcache's Cache used as an integer-keyed FIFO of raw byte values.

    Errors are diskcache's and SQLite's own (BACKEND_ERRORS): Spool translates them. Connections are per thread, as diskcache's are."""

    def __init__(self, directory: str, *, timeout_s: float, synchronous: int, journal_size_limit: int) -> None:
        self.directory = directory
        self._cache = diskcache.Cache(
            directory,
            timeout=timeout_s,
            # The default policy evicts entries past size_limit: silent data loss.
            eviction_policy="none",
            disk_min_file_size=NEVER_A_SIDE_FILE,
            sqlite_synchronous=synchronous,
            sqlite_journal_size_limit=journal_size_limit,
        )
        try:
            check_layout(self._cache)
        except BaseException:
            self._cache.close()
            raise

    def transact(self) -> AbstractContextManager[Any]:
        """One write transaction for the block (BEGIN IMMEDIATE; rolled back on an exception)."""
        transaction: AbstractContextManager[Any] = self._cache.transact()
        return transaction

    def append(self, values: Sequence[bytes]) -> list[int]:
        """Append after the queue's last key, as Cache.push would one by one; call inside
        transact(), so the key read and the inserts are one transaction."""
        last = self._cache._sql(_LAST_QUEUE_KEY).fetchall()
        first_key = last[0][0] + 1 if last else FIRST_QUEUE_KEY
        now = time.time()
        keys = list(range(first_key, first_key + len(values)))
        self._cache._con.executemany(
            _INSERT_RAW, [(key, now, now, value) for key, value in zip(keys, values, strict=True)]
        )
        return keys

    def iter_oldest(self, max_entries: int, after: int) -> Iterator[tuple[int, bytes]]:
        """Yield (key, value) of up to `max_entries` entries with keys above `after`, oldest first."""
        # Integer keys are the queue's (push); values are raw blobs since side files are off.
        cursor = self._cache._sql(
            "SELECT key, mode, value FROM Cache WHERE raw = 1 AND key > ? AND typeof(key) = 'integer' ORDER BY key LIMIT ?",
            (max(after, -1), max_entries),
        )
        try:
            for key, mode, value in cursor:
                if mode == MODE_RAW and isinstance(value, bytes):
                    yield key, value
                else:  # written by another configuration: let diskcache decode it
                    decoded = self._cache.get(key)
                    if isinstance(decoded, bytes):
                        yield key, decoded
        finally:
            cursor.close()

    def remove(self, keys: Sequence[int]) -> None:
        """Delete entries by key (keys already gone are ignored); call inside transact()."""
        # The writer removes what it read, oldest first: consecutive keys. Each run of them is
        # one range (`key BETWEEN first AND last`: a walk of the key index), where a list of
        # 500 keys was 500 lookups per statement; keys on their own go by list.
        singles: list[int] = []
        for first, last in _runs(keys):
            if first == last:
                singles.append(first)
            else:
                self._delete("key BETWEEN ? AND ?", [first, last])
        for start in range(0, len(singles), _KEYS_PER_STATEMENT):
            chunk = singles[start : start + _KEYS_PER_STATEMENT]
            self._delete(f"key IN ({','.join('?' * len(chunk))})", chunk)

    def _delete(self, which: str, parameters: list[int]) -> None:
        # diskcache's triggers keep its count and size right; rows with a side file (none
        # unless written by another configuration) go through delete(), which removes the file.
        self._cache._sql(f"DELETE FROM Cache WHERE raw = 1 AND filename IS NULL AND {which}", parameters)
        for (key,) in self._cache._sql(f"SELECT key FROM Cache WHERE raw = 1 AND {which}", parameters).fetchall():
            self._cache.delete(key)

    def oldest_store_time(self) -> float | None:
        """When the oldest entry was appended (time.time()), or None when empty."""
        rows = self._cache._sql(
            "SELECT store_time FROM Cache WHERE raw = 1 AND key >= 0 AND typeof(key) = 'integer' ORDER BY key LIMIT 1"
        ).fetchall()
        return float(rows[0][0]) if rows else None

    def checkpoint(self) -> None:
        """PRAGMA wal_checkpoint(PASSIVE) on this thread's connection."""
        self._cache._sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (diskcache opens one per thread)."""
        connection: sqlite3.Connection = self._cache._con
        return connection

    def set_autocheckpoint(self, pages: int) -> None:
        """PRAGMA wal_autocheckpoint on this thread's connection (per connection, not stored)."""
        self.connection().execute(f"PRAGMA wal_autocheckpoint = {int(pages)}").fetchall()

    @property
    def page_size(self) -> int:
        return int(self._cache._page_size)

    def count(self) -> int:
        return len(self._cache)

    def volume(self) -> int:
        return int(self._cache.volume())

    def close(self) -> None:
        self._cache.close()
