"""One server per store: an exclusive lock on `<db>.lock`, held for the server's lifetime.

Two servers on one database and spool would each run a writer and each answer for the same
spool; the second one is refused with a clear message instead. The operating system drops
the lock when the holder dies, even by SIGKILL, so a restart never finds a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tlytics.errors import StoreError


class InstanceLock:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"{self.path.with_suffix('')} is in use by another Tlytics server (pid {holder});"
                " stop it first, or give this one another --db"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
