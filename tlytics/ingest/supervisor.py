"""`tlytics --workers N` (N > 1): N ingest processes on one port, one writer for all.

The process the operator started becomes the supervisor. It holds the server's locks (the
store's and the spool's: a second server is refused as always), reserves the port, runs the
store's migrations once, and owns the writer (a `ProcessExecutor`, its writer process
restarted if it dies; with `--writer thread`, a thread of the supervisor). Then it spawns the ingest workers (tlytics.ingest.worker), each the
usual application with a spool of its own, `<spool>/worker-<i>` (the same directory for the
same index at every start, so a restart finds what each acknowledged); the workers bind the
port with SO_REUSEPORT and the kernel spreads new connections over them. Each worker's writer
calls come to the supervisor over a socket pair (tlytics.writer.channel) and run on the one
writer, which drains every spool under `<spool>` whatever N is now (tlytics.writer.spools).

A worker that dies (even by SIGKILL) is started again on its spool, after a short pause if it
keeps dying at once. SIGTERM or SIGINT to the supervisor stops every worker cleanly (each
answers what is in flight and drains), then the writer drains what is left, as a single server
does. SIGHUP is passed on to the workers (they reload the keys file). If the supervisor
itself is killed, the workers and the writer die with it (Linux) and a restart replays their
spools, as after the kill of a single server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from multiprocessing.context import SpawnProcess

import structlog

from tlytics.errors import TlyticsError
from tlytics.ingest.instance_lock import InstanceLock
from tlytics.ingest.settings import Settings
from tlytics.ingest.worker import SHUTDOWN_TIMEOUT_S, run_worker
from tlytics.store.open import open_backend
from tlytics.writer import ProcessExecutor, ThreadExecutor, WriteExecutor, WriteScheduler
from tlytics.writer.channel import serve_worker
from tlytics.writer.process import stop_signals_blocked, writer_resources

log = structlog.get_logger("tlytics.ingest")

# How long the workers have to start (imports, store and spool opened) before the start fails.
START_TIMEOUT_S = 120.0
WATCH_PERIOD_S = 0.2
# A worker that dies within this long of its start is restarted after a pause that doubles
# each time (up to RESTART_DELAY_MAX_S): one that cannot start does not spin a core.
RESTART_QUICK_S = 10.0
RESTART_DELAY_MAX_S = 5.0


class WorkersUnsupported(TlyticsError):
    """More than one worker was asked for on a system without SO_REUSEPORT."""


@dataclasses.dataclass
class _Worker:
    index: int
    process: SpawnProcess | None = None
    serving: asyncio.Task[None] | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    listening: bool = False


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, so the workers can bind it beside it
    and nobody else can take the port meanwhile (with port 0: the port the system chose).
    Checked free first without SO_REUSEPORT: an unrelated server that set it too would
    otherwise share the port with this one."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise WorkersUnsupported(
            "--workers above 1 needs SO_REUSEPORT (Linux), which this system does not have: run one worker"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserved.bind((host, port))
    except OSError:
        reserved.close()
        raise
    return reserved  # bound, never listening: connections go to the workers only


class Supervisor:
    """Starts, watches and stops the workers; owns the locks, the port and the writer."""

    def __init__(self, settings: Settings, *, on_listening: Callable[[int], None]) -> None:
        self._settings = settings
        self._on_listening = on_listening
        self._workers = [_Worker(index) for index in range(settings.workers)]
        self._stop = asyncio.Event()
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded process

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT; TlyticsError or OSError when the server cannot start."""
        settings = self._settings
        backend = open_backend(settings)
        lock = InstanceLock(backend.lock_path(), settings.resolved_spool_dir)
        lock.acquire()
        try:
            reserved = reserve_port(settings.host, settings.port)
            with reserved:
                if not backend.starts_without_store:
                    # SQLite migrated once, here, before any worker opens it (and a file that
                    # cannot be opened stops the start). PostgreSQL migrates under an advisory
                    # lock as each worker starts, as several nodes do; one that refuses this
                    # server stops its workers' start.
                    await asyncio.to_thread(backend.migrate)
                self._worker_settings = dataclasses.replace(settings, port=reserved.getsockname()[1])
                self._executor: WriteExecutor = (
                    ProcessExecutor(settings, parent_pid=os.getpid())
                    if settings.writer_process
                    # --writer thread: on a thread of the supervisor (which does little else).
                    else ThreadExecutor(await asyncio.to_thread(writer_resources, settings))
                )
                try:
                    await self._serve()
                finally:
                    await self._stop_all()
        finally:
            lock.release()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._pass_on, signal.SIGHUP)
        for worker in self._workers:
            self._spawn(worker)
        await self._started()
        self._on_listening(self._worker_settings.port)
        while not self._stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=WATCH_PERIOD_S)
            for worker in self._workers:
                if not self._stop.is_set() and worker.process is not None and worker.process.exitcode is not None:
                    await self._restart(worker)

    def _spawn(self, worker: _Worker) -> None:
        mine, theirs = socket.socketpair()
        process = self._context.Process(
            target=run_worker,
            args=(self._worker_settings, worker.index, theirs, os.getpid()),
            name=f"tlytics-worker-{worker.index}",
        )
        # Spawned with the stop signals blocked: one that comes while it imports waits until
        # it has its handlers (see tlytics.writer.process).
        with stop_signals_blocked():
            process.start()
        theirs.close()
        worker.process, worker.started_at, worker.listening = process, time.monotonic(), False

        def listening(_port: int) -> None:
            worker.listening = True

        worker.serving = asyncio.create_task(
            serve_worker(mine, self._executor, on_listening=listening), name=f"worker-{worker.index}-channel"
        )

    async def _started(self) -> None:
        """Wait until every worker listens; TlyticsError when one exits first or none in time."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(worker.listening for worker in self._workers):
            for worker in self._workers:
                assert worker.process is not None
                if worker.process.exitcode is not None:
                    raise TlyticsError(
                        f"ingest worker {worker.index} could not start (exit code {worker.process.exitcode});"
                        " its log says why"
                    )
            if self._stop.is_set():
                return
            if time.monotonic() >= deadline:
                raise TlyticsError(f"the ingest workers did not start within {START_TIMEOUT_S:g} s")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=WATCH_PERIOD_S)

    async def _restart(self, worker: _Worker) -> None:
        assert worker.process is not None
        ran_s = time.monotonic() - worker.started_at
        worker.quick_deaths = worker.quick_deaths + 1 if ran_s < RESTART_QUICK_S else 0
        delay_s = min(RESTART_DELAY_MAX_S, 0.25 * 2 ** (worker.quick_deaths - 1)) if worker.quick_deaths else 0.0
        log.error(
            "worker_died",
            worker=worker.index,
            pid=worker.process.pid,
            exit_code=worker.process.exitcode,
            ran_s=round(ran_s, 1),
            restart_in_s=delay_s,
        )
        worker.process.close()
        if worker.serving is not None:
            await worker.serving  # its calls in hand end first (the writer finishes them)
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=delay_s)
        if not self._stop.is_set():
            self._spawn(worker)
            log.info("worker_restarted", worker=worker.index, pid=worker.process.pid)

    def _pass_on(self, signal_number: int) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.exitcode is None and worker.process.pid:
                with suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal_number)

    async def _stop_all(self) -> None:
        """Stop the workers (each answers what is in flight and drains), then the writer
        drains what is left and closes; a worker that does not stop in time is killed."""
        self._pass_on(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S + self._settings.shutdown_drain_s
        for worker in self._workers:
            process = worker.process
            if process is None or process.exitcode is not None:
                continue
            await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("worker_did_not_stop", worker=worker.index, pid=process.pid)
                process.kill()
                await asyncio.to_thread(process.join)
        for worker in self._workers:
            if worker.serving is not None:
                await worker.serving
        final = WriteScheduler(
            self._executor,
            flush_period_s=self._settings.flush_period_s,
            batch_max_entries=self._settings.writer_batch_max_entries,
            batch_max_events=self._settings.writer_batch_max_events,
        )
        await final.close(drain_timeout_s=self._settings.shutdown_drain_s)


def run_supervisor(settings: Settings, *, loop: asyncio.AbstractEventLoop, on_listening: Callable[[int], None]) -> None:
    """Run a `--workers N` server on `loop` until it is stopped (see Supervisor)."""
    try:
        loop.run_until_complete(Supervisor(settings, on_listening=on_listening).run())
    finally:
        loop.close()
