"""A Spool wrapper that fork() waits for, and that opens its Spool when it can.

SQLite must not be in the middle of a call when a process forks: the child would inherit a
locked connection mutex and hang the first time diskcache closes the inherited connection.
Every spool call of the client holds this wrapper's lock, and an at-fork hook takes all those
locks before the fork and releases them on both sides after it.

The spool opens lazily: a spool directory that cannot be created or written (a read-only
file system, a home directory that does not exist) must not make `Client()` raise. Until it
opens, every call raises SpoolNotOpen, and opening is retried at most every
`REOPEN_PERIOD_S`, so a busy application does not knock on the file system at every call.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from tlytics.errors import SpoolError
from tlytics.spool import Spool

REOPEN_PERIOD_S = 0.25


class SpoolNotOpen(SpoolError):
    """The client's spool directory cannot be opened (yet); events wait in memory."""


_registry: weakref.WeakSet[ForkSafeSpool] = weakref.WeakSet()


class ForkSafeSpool:
    """The client's view of a Spool: the same calls, each under a fork-aware lock."""

    def __init__(self, spool: Spool | Callable[[], Spool]) -> None:
        self._spool: Spool | None = spool if isinstance(spool, Spool) else None
        self._open_spool = spool if not isinstance(spool, Spool) else None
        self._last_open_failure: tuple[float, str] | None = None
        self._lock = threading.RLock()
        _registry.add(self)

    @property
    def is_open(self) -> bool:
        return self._spool is not None

    def try_open(self, *, now: bool = False) -> bool:
        """Open the spool if it is not open yet; True when open. Tries at most every
        REOPEN_PERIOD_S, unless `now` (an explicit flush() deserves a real attempt)."""
        try:
            with self._lock:
                if now:
                    self._last_open_failure = None
                self._opened()
        except SpoolNotOpen:
            return False
        return True

    def _opened(self) -> Spool:
        # Called with the lock held.
        if self._spool is not None:
            return self._spool
        assert self._open_spool is not None
        now = time.monotonic()
        if self._last_open_failure is not None and now - self._last_open_failure[0] < REOPEN_PERIOD_S:
            raise SpoolNotOpen(self._last_open_failure[1])
        try:
            self._spool = self._open_spool()
        except (SpoolError, OSError, sqlite3.Error) as exc:
            message = str(exc) if isinstance(exc, SpoolError) else f"cannot open the spool: {exc}"
            self._last_open_failure = (now, message)
            raise SpoolNotOpen(message) from exc
        self._last_open_failure = None
        return self._spool

    def renew_lock_after_fork(self) -> None:
        """In a child forked without the at-fork hooks (see Client._check_pid): a new lock,
        as the hook would have made; the inherited one may be held by a parent thread."""
        self._lock = threading.RLock()

    @contextmanager
    def locked(self) -> Iterator[Spool]:
        """The Spool itself, for several calls (or a lazy read) under one hold of the lock."""
        with self._lock:
            yield self._opened()

    def append(self, value: bytes) -> int:
        with self._lock:
            return self._opened().append(value)

    def append_many(self, values: Sequence[bytes]) -> list[int]:
        with self._lock:
            return self._opened().append_many(values)

    def peek(self, max_entries: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._opened().peek(max_entries)

    def remove(self, keys: Iterable[int]) -> None:
        with self._lock:
            self._opened().remove(keys)

    def checkpoint(self) -> None:
        with self._lock:
            self._opened().checkpoint()

    def count(self) -> int:
        with self._lock:
            return self._opened().count()

    def size_bytes(self) -> int:
        with self._lock:
            return self._opened().size_bytes()


def _ordered() -> list[ForkSafeSpool]:
    return sorted(_registry, key=id)


def _before_fork() -> None:
    for spool in _ordered():
        spool._lock.acquire()


def _after_fork_in_parent() -> None:
    for spool in reversed(_ordered()):
        spool._lock.release()


def _after_fork_in_child() -> None:
    for spool in _ordered():
        spool._lock = threading.RLock()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
