"""Which process sends: several processes may share one spool directory, and only the holder
of an exclusive lock on `sender.lock` ships its entries, so no two senders post the same
entry at once. The operating system drops the lock when its holder dies, so another process
takes over by itself."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class SenderLease:
    """A non-blocking, process-wide exclusive lock on a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptor without unlocking.

        flock belongs to the open file shared with the parent; unlocking here would take the
        parent's lease away while its sender is still running.
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class WakeFile:
    """A file whose modification time a flush() in any process sets, and an idle sender in the
    lease holder watches: so an explicit flush() is served at once even when another process
    sends for the spool, instead of at the holder's next flush_period."""

    def __init__(self, path: Path) -> None:
        self._path = path
        # Looked at once now: a ring between now and the sender's first look still counts.
        self._seen = self._stamp()

    def _stamp(self) -> int:
        try:
            return os.stat(self._path).st_mtime_ns
        except OSError:
            return 0  # not rung yet: its creation will be the first ring

    def ring(self) -> None:
        """Ask whoever sends for this spool to look at it now; never raises."""
        try:
            with open(self._path, "ab"):
                pass
            now_ns = time.time_ns()
            os.utime(self._path, ns=(now_ns, now_ns))
        except OSError:
            pass  # no wake-up: the holder still sends within its flush_period

    def rang(self) -> bool:
        """Whether the file was rung since the last look."""
        stamp = self._stamp()
        rang = stamp != self._seen
        self._seen = stamp
        return rang
