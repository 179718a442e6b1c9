"""A Spool wrapper that fork() waits for.

SQLite must not be in the middle of a call when a process forks: the child would inherit a
locked connection mutex and hang the first time diskcache closes the inherited connection.
Every spool call of the client holds this wrapper's lock, and an at-fork hook takes all those
locks before the fork and releases them on both sides after it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from tlytics.spool import Spool

_registry: weakref.WeakSet[ForkSafeSpool] = weakref.WeakSet()


class ForkSafeSpool:
    """The client's view of a Spool: the same calls, each under a fork-aware lock."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._lock = threading.RLock()
        _registry.add(self)

    @contextmanager
    def locked(self) -> Iterator[Spool]:
        """The Spool itself, for several calls (or a lazy read) under one hold of the lock."""
        with self._lock:
            yield self._spool

    def append(self, value: bytes) -> int:
        with self._lock:
            return self._spool.append(value)

    def append_many(self, values: Sequence[bytes]) -> list[int]:
        with self._lock:
            return self._spool.append_many(values)

    def peek(self, max_entries: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._spool.peek(max_entries)

    def remove(self, keys: Iterable[int]) -> None:
        with self._lock:
            self._spool.remove(keys)

    def count(self) -> int:
        with self._lock:
            return self._spool.count()

    def size_bytes(self) -> int:
        with self._lock:
            return self._spool.size_bytes()


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
