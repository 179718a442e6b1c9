"""One server per SQLite store and per spool: exclusive locks on `<db>.lock` and
`<spool>/.lock`, held for the server's lifetime.

Two servers on one SQLite database would each run a writer; two servers on one spool (even
with different stores) would each drain the other's acknowledged events into their store.
The second one is refused with a clear message naming the resource and the holder's pid
instead. A PostgreSQL store is shared on purpose (any number of servers, each with its own
spool), and has no local file to lock: then only the spool is locked. The operating system drops the locks when the holder dies, even by SIGKILL, so a
restart never finds a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from tlytics.errors import SpoolError, StoreError, TlyticsError


@dataclass(frozen=True)
class _Resource:
    name: str  # what the message calls it
    path: Path
    lock_path: Path
    flag: str  # the option that gives this server another one
    error: type[TlyticsError]


class InstanceLock:
    def __init__(self, db_path: Path | None, spool_dir: Path) -> None:
        """`db_path`: the SQLite store's file; None for a shared store (PostgreSQL)."""
        store = []
        if db_path is not None:
            store.append(_Resource("store", db_path, db_path.with_name(db_path.name + ".lock"), "--db", StoreError))
        self._resources = (
            *store,
            # Inside the spool directory, so the lock follows the directory however it is named
            # (a relative path, a symlink) and whichever store it is paired with.
            _Resource("spool", spool_dir, spool_dir / ".lock", "--spool", SpoolError),
        )
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Lock the store (SQLite), then the spool; raise StoreError or SpoolError if either is held."""
        try:
            for resource in self._resources:
                self._fds.append(_lock(resource))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in reversed(self._fds):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._fds.clear()


def _lock(resource: _Resource) -> int:
    resource.lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(resource.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise resource.error(
            f"the {resource.name} {resource.path} is in use by another Tlytics server (pid {holder});"
            f" stop it first, or give this one another {resource.flag}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
