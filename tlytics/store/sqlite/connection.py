"""Opening SQLite connections the way every part of the store needs them, and the one place
where APSW's errors become `StoreError`.

Each connection waits out another's short write locks (the busy timeout) instead of failing at
once, applies APSW's best practices (WAL, foreign keys, no double-quoted strings), and sets
`synchronous` explicitly. Read connections are opened read-only, so a read can never take the
write lock the writer needs, and they stop a statement that outlives its read's time budget
(see `tlytics.store.budget`): SQLite calls a progress handler every few thousand instructions,
which ends the statement once the budget is spent, so the thread is free again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import apsw
import apsw.bestpractice

from tlytics.errors import StoreError
from tlytics.store.budget import current_budget, over_budget

Synchronous = Literal["normal", "full"]

BUSY_TIMEOUT_MS = 10_000
# SQLite instructions between two looks at the clock: about a millisecond of work at most, and
# a look (a context variable and a clock read) costs well under a microsecond.
_BUDGET_CHECK_INSTRUCTIONS = 10_000
# While another process holds the write lock, optimizing is skipped after this long.
_OPTIMIZE_BUSY_TIMEOUT_MS = 100

_CONNECTION_PRACTICES: tuple[Callable[[apsw.Connection], None], ...] = (
    apsw.bestpractice.connection_wal,
    apsw.bestpractice.connection_enable_foreign_keys,
    apsw.bestpractice.connection_dqs,
    apsw.bestpractice.connection_recursive_triggers,
)


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Turn an APSW error inside into `StoreError("<action> failed: <SQLite's message>")`,
    the APSW error kept as its cause; other errors pass through."""
    try:
        yield
    except apsw.InterruptError as exc:
        budget = current_budget()
        if budget is not None and budget.spent:
            raise budget.timed_out() from exc
        raise StoreError(f"{action} failed: {exc}") from exc
    except apsw.Error as exc:
        raise StoreError(f"{action} failed: {exc}") from exc


def connect(path: str, synchronous: Synchronous, *, readonly: bool = False) -> apsw.Connection:
    """A configured connection to the store at `path` (created when missing, unless `readonly`)."""
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    connection = apsw.Connection(path, flags=flags)
    # First: the practices below already take locks, and after a SIGKILL the old writer
    # process may still be finishing its last batch.
    connection.set_busy_timeout(BUSY_TIMEOUT_MS)
    for practice in _CONNECTION_PRACTICES:
        practice(connection)
    connection.pragma("synchronous", synchronous.upper())
    if readonly:
        # An id of its own: another progress handler (a test's, say) stays in place.
        connection.set_progress_handler(over_budget, _BUDGET_CHECK_INSTRUCTIONS, id="tlytics-read-budget")
    else:
        _optimize_unless_busy(connection)
    return connection


def _optimize_unless_busy(connection: apsw.Connection) -> None:
    """apsw.bestpractice.connection_optimize, skipped while another process holds the write lock.

    It may write planner statistics, so it needs that lock; it is only an optimization (the next
    open runs it again), and waiting for it would keep a store whose schema is current from
    opening at all while, say, a backup holds the lock: the server could not even spool.
    """
    connection.set_busy_timeout(_OPTIMIZE_BUSY_TIMEOUT_MS)
    try:
        apsw.bestpractice.connection_optimize(connection)
    except apsw.BusyError:
        pass
    finally:
        connection.set_busy_timeout(BUSY_TIMEOUT_MS)


def fold_wal_on_close(path: str) -> None:
    """Fold the WAL into the database file and remove the `-wal` and `-shm` files, once no
    other connection has the store open.

    SQLite does this when the last connection closes, but only a connection that may write:
    the server's last ones are its read-only readers (the writer closes before them, or in
    a process of its own), so after a clean stop both files stayed beside the database, and a
    copy of the `.db` alone missed the batches they held. Best effort: with another
    connection still open, or a file this process may not write, nothing changes.
    """
    try:
        connection = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error:
        return
    try:
        connection.set_busy_timeout(_OPTIMIZE_BUSY_TIMEOUT_MS)
        # A read opens the WAL, so that closing this connection checkpoints and removes it if
        # it is the last one. Not a checkpoint of our own: with the writer's connection still
        # open, resetting the WAL under its read snapshot made its next write fail at once
        # ("database is locked"), which stopped a declared property's backfill for good.
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    except apsw.Error:
        pass
    finally:
        connection.close()
