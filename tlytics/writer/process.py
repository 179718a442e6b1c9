"""The writer process: writer functions run in a process of its own (spawned, restarted if it
dies), so the store's work (SQLite's, or PostgreSQL's encoding and COPY) uses the second core instead of competing with the HTTP handlers
for the GIL.

The process gets the server's `Settings` whole and the server's pid; it opens its spool and
quarantine at start and its store on first use (see WriterResources). Module state below is
the process's own. If the server is killed, the process dies with it (Linux) or sees its task
pipe close and exits after the call in hand; a batch it finishes is committed before its spool
entries are removed, so the crash rule holds whichever process dies when.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TypeVar, TypeVarTuple

import structlog

from tlytics.errors import StoreError
from tlytics.ingest.settings import Settings
from tlytics.spool import Spool
from tlytics.store.open import open_writer
from tlytics.writer.executor import round_trips
from tlytics.writer.resources import WriterResources
from tlytics.writer.spools import spool_dirs

log = structlog.get_logger("tlytics.writer")

T = TypeVar("T")
Args = TypeVarTuple("Args")

_PR_SET_PDEATHSIG = 1
# SIGHUP too: a terminal's hang-up signals the whole group, and the server reloads or ignores it.
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
# In the writer process: its resources, set by _initialize.
_resources: WriterResources | None = None


def die_with_parent(parent_pid: int) -> None:
    """Be killed when the server dies (Linux), so a restarted server never finds this writer
    still at work; a batch cut short by that is rolled back by the store and stays spooled."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the worker still exits once the server's pipe closes
    if parent_pid and os.getppid() != parent_pid:  # the server died before prctl took effect
        os._exit(0)


def _initialize(settings: Settings, parent_pid: int) -> None:
    """The writer process's start: signals, parent watch, logging, then its resources."""
    global _resources
    from tlytics.logs import configure_logging

    # Ctrl-C in a terminal (and systemd's stop) signal the whole process group: the server
    # decides when this process stops, after its final drain, so the writer ignores them. The
    # server spawned this process with them blocked (stop_signals_blocked), so none could
    # kill it while it was importing; one that came meanwhile is discarded by SIG_IGN, then unblock.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    die_with_parent(parent_pid)
    configure_logging(settings.log_level)
    _resources = writer_resources(settings)
    log.info("writer_started", pid=os.getpid(), spools=len(_resources.spools))


def writer_resources(settings: Settings) -> WriterResources:
    """A writer's resources for `settings`: every spool under its spool directory (see
    spools.py), the quarantine, and the store (opened on first use)."""
    spool_dir, *worker_dirs = spool_dirs(settings.resolved_spool_dir, settings.workers)
    return WriterResources(
        Spool(spool_dir, sync=settings.spool_sync),
        Spool(spool_dir / "quarantine", sync=settings.spool_sync),
        lambda: open_writer(settings),
        worker_spools=[Spool(directory, sync=settings.spool_sync) for directory in worker_dirs],
    )


def _run(fn: Callable[..., T], *args: object) -> T:
    """In the writer process: one writer function with this process's resources.

    Its error goes back to the server pickled: one the server cannot unpickle (an exception
    whose class needs keyword arguments) would break the pool there, reported as the writer
    process "terminated abruptly" while it was alive and well, and the writer replaced. Such an
    error goes back as a StoreError with its text instead (as over a worker's channel)."""
    assert _resources is not None, "the writer process was not initialized"
    try:
        return fn(_resources, *args)
    except Exception as exc:
        if round_trips(exc):
            raise
        raise StoreError(f"{type(exc).__name__}: {exc}") from None


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread meanwhile, so a process spawned inside inherits
    them blocked (the mask survives fork and exec) and cannot die of them before it ignores
    them; what arrives meanwhile stays pending for this process and is handled afterwards.
    CPython's resource tracker guards its own spawn this way (bpo-33613)."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: no process group signals either
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ProcessExecutor:
    """WriteScheduler functions in a writer process of its own, replaced by a new one if it dies.

    The pool spawns its process on the first submit (and a new pool after a crash), so every
    submit spawns with the stop signals blocked: a Ctrl-C to the whole process group while the
    new process is still importing must not kill it before the server's final drain.
    """

    def __init__(self, settings: Settings, *, parent_pid: int | None = None) -> None:
        self._settings = settings
        self._parent_pid = os.getpid() if parent_pid is None else parent_pid
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # Blocked here too: the pool's queues start CPython's resource tracker process, which
        # ignores SIGINT and SIGTERM but not SIGHUP; spawned with it blocked, a hang-up of the
        # process group cannot kill it (it did, with tracebacks in the server's log).
        with stop_signals_blocked():
            return ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded server
                initializer=_initialize,
                initargs=(self._settings, self._parent_pid),
            )

    async def execute(self, fn: Callable[[WriterResources, *Args], T], *args: *Args) -> T:
        executor = self._executor
        try:
            with stop_signals_blocked():
                future: Future[T] = executor.submit(_run, fn, *args)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            # The call fails (the caller retries it); the next one gets a new process. Only
            # once per dead pool, though several calls may have been waiting on it.
            if self._executor is executor:
                log.error("writer_process_died_restarting")
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
            raise

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
