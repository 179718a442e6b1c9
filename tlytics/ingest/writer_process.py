"""The body of the writer process: opens its own store (the only write connection) and spool
at start, then runs drain_batch whenever the server asks. Module state is per process."""

from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tlytics.spool import Spool, SpoolSync
from tlytics.store import EventFilter, SQLiteStore

if TYPE_CHECKING:
    from tlytics.ingest.writer import DrainResult


@dataclass(frozen=True)
class WorkerSettings:
    """What the writer process needs to open its resources (sent to it pickled)."""

    db_path: Path
    spool_dir: Path
    sync: SpoolSync
    max_entries: int
    max_events: int
    log_level: str = "info"
    parent_pid: int = 0  # the server; the writer exits when it is gone


_PR_SET_PDEATHSIG = 1
_settings: WorkerSettings | None = None
_spool: Spool | None = None
_quarantine: Spool | None = None
_store: SQLiteStore | None = None


def _die_with_parent(parent_pid: int) -> None:
    """Be killed when the server dies (Linux), so a restarted server never finds this writer
    still at work; a batch cut short by that is rolled back by SQLite and stays spooled."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the worker still exits once the server's pipe closes
    if parent_pid and os.getppid() != parent_pid:  # the server died before prctl took effect
        os._exit(0)


def initialize(settings: WorkerSettings) -> None:
    global _settings, _spool, _quarantine
    from tlytics.logs import configure_logging

    # Ctrl-C in a terminal (and systemd's stop) signal the whole process group: the server
    # decides when this process stops, after its final drain, so the writer ignores them. The
    # server spawned this process with them blocked (ProcessDrainer), so none could kill it
    # while it was importing; one that came meanwhile is discarded by SIG_IGN, then unblock.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    _die_with_parent(settings.parent_pid)
    configure_logging(settings.log_level)
    _settings = settings
    _spool = Spool(settings.spool_dir, sync=settings.sync)
    _quarantine = Spool(settings.spool_dir / "quarantine", sync=settings.sync)


def _opened_store() -> SQLiteStore:
    """The store, opened on first use rather than in `initialize`.

    Opening can fail while another process holds the store's write lock past the busy timeout;
    in `initialize` that would kill this process (and the next one, and the next). Here it
    fails one call like a busy insert does, and the writer retries it with backoff and logs it.
    """
    global _store
    assert _settings is not None
    if _store is None:
        _store = SQLiteStore(_settings.db_path, synchronous=_settings.sync)
    return _store


def drain() -> DrainResult:
    from tlytics.ingest.writer import drain_batch

    assert _settings is not None and _spool is not None and _quarantine is not None
    return drain_batch(
        _spool, _opened_store(), _quarantine, max_entries=_settings.max_entries, max_events=_settings.max_events
    )


def delete_matching(where: EventFilter, max_rows: int, remember_ids: bool) -> int:
    return _opened_store().delete_matching(where, max_rows=max_rows, remember_ids=remember_ids)
