"""The aiohttp application factory: the settings, the middleware and the route table put
together, and each resource's lifetime as a cleanup context (opened in order at start, closed
in reverse at shutdown)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog
from aiohttp import web

import tlytics.ingest.protocol_errors as protocol_errors
from tlytics.ingest.auth import install_access_control
from tlytics.ingest.body_work import body_workers_ctx
from tlytics.ingest.health_watch import health_watch_ctx
from tlytics.ingest.instance_lock import InstanceLock
from tlytics.ingest.metrics import Metrics
from tlytics.ingest.middleware import answer_headers, errors_and_access_log
from tlytics.ingest.routes import add_routes
from tlytics.ingest.settings import Settings
from tlytics.ingest.state import (
    ACCEPT,
    BACKEND,
    COMMITTER,
    COUNTERS,
    KEYS,
    METRICS,
    QUARANTINE,
    READ_EXECUTOR,
    SETTINGS,
    SPOOL,
    STORE,
    WORKER,
    WRITE_SCHEDULER,
    AcceptPath,
    IngestCounters,
    WorkerRole,
)
from tlytics.ingest.worker_figures import server_spool_figures_ctx
from tlytics.spool import GroupCommitter, Spool
from tlytics.store.open import open_backend, open_served_reader
from tlytics.writer import (
    DrainResult,
    ProcessExecutor,
    ThreadExecutor,
    WriteExecutor,
    WriterResources,
    WriteScheduler,
)
from tlytics.writer.spools import spool_dirs, worker_spool_dir

log = structlog.get_logger("tlytics.ingest")

# Store reads at once (each its own thread and read connection); more would only queue on 2 cores.
READER_THREADS = 4


def create_app(settings: Settings, *, worker: WorkerRole | None = None) -> web.Application:
    """Build the Tlytics server application for `settings`; with `worker`, one of the ingest
    workers of a `--workers N` server (its own spool, the server's writer)."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[errors_and_access_log],
        # Request bodies are decoded by the handlers (bodies.read_body): aiohttp's own
        # decoding answers a corrupt or unsupported body with a plain-text 400 or a 500.
        # aiohttp's own refusals (a request its parser cannot read) answer in JSON, without
        # quoting the request, and log without it (protocol_errors).
        handler_args={"auto_decompress": False, "logger": protocol_errors.PROTOCOL_LOGGER},
    )
    protocol_errors.install()
    app[SETTINGS] = settings
    # The store, chosen once: nothing below asks which kind it is.
    app[BACKEND] = open_backend(settings)
    app[COUNTERS] = IngestCounters()
    app[METRICS] = Metrics()
    if worker is not None:
        app[WORKER] = worker
    install_access_control(app)  # first: a bad keys file stops the start before anything opens
    app.cleanup_ctx.extend(
        [
            _instance_lock_ctx,
            _spool_ctx,
            _store_ctx,
            health_watch_ctx,
            server_spool_figures_ctx,  # /health and /metrics count every worker's spool
            _writer_ctx,
            _committer_ctx,
            body_workers_ctx,
        ]
    )
    app.on_startup.append(_warn_if_open)
    app.on_response_prepare.append(answer_headers)
    add_routes(app)
    return app


def _own_spool_dir(app: web.Application) -> Path:
    """The spool this app appends to: the server's, or in a worker its own part of it."""
    spool_dir = app[SETTINGS].resolved_spool_dir
    worker = app.get(WORKER)
    return spool_dir if worker is None else worker_spool_dir(spool_dir, worker.index)


async def _instance_lock_ctx(app: web.Application) -> AsyncIterator[None]:
    # A shared store (PostgreSQL) has no file of its own to lock: only this server's spool is.
    # A worker's supervisor holds the server's locks: the worker locks its own spool only.
    lock = InstanceLock(app[BACKEND].lock_path() if WORKER not in app else None, _own_spool_dir(app))
    lock.acquire()
    yield
    lock.release()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _warn_if_open(app: web.Application) -> None:
    settings = app[SETTINGS]
    if _is_loopback(settings.host):
        return
    ring = app[KEYS].ring
    if not ring.has_write_keys:
        log.warning(
            "no_write_keys", host=settings.host, hint="anyone who reaches this address can post events; set --write-key"
        )
    if not ring.has_reading_keys:
        log.warning(
            "no_read_keys", host=settings.host, hint="anyone who reaches this address can read events; set --read-key"
        )


async def _spool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    spool_dir = settings.resolved_spool_dir
    app[SPOOL] = Spool(
        _own_spool_dir(app),
        sync=settings.spool_sync,
        # --spool-max is the whole server's: each worker's spool takes an equal part.
        max_bytes=settings.spool_max_bytes // (settings.workers if WORKER in app else 1),
        min_free_bytes=settings.spool_min_free_bytes,
        # The writer checkpoints the spool's WAL after each batch: not the event loop.
        checkpoint_on_append=False,
    )
    app[QUARANTINE] = Spool(spool_dir / "quarantine", sync=settings.spool_sync)
    yield
    app[QUARANTINE].close()
    app[SPOOL].close()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, backend = app[SETTINGS], app[BACKEND]
    # Migrations run here, once, before any reader opens: a reader never sees an old schema.
    # A PostgreSQL that does not answer yet does not stop the server (see tlytics.store.backend).
    reader = await asyncio.to_thread(
        open_served_reader,
        backend,
        statement_timeout_s=settings.read_timeout_s,
        start_without_store=settings.start_without_store,
    )
    app[STORE] = reader
    # The name this server's writer gives a shared store, kept in its spool directory.
    node = await asyncio.to_thread(backend.node_name)
    if node is not None:
        log.info("shared_store", store=backend.describe(), node=node)
    # A few threads, each with its own read connection: a slow read holds up only its own.
    app[READ_EXECUTOR] = ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="store-reader")
    yield
    app[READ_EXECUTOR].shutdown(wait=True)
    reader.close()


async def _writer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    worker = app.get(WORKER)
    executor: WriteExecutor
    if worker is not None:
        executor = worker.writer
    elif settings.writer_process:
        executor = ProcessExecutor(settings, parent_pid=os.getpid())
    else:
        # Worker spools left by a run with --workers above 1 are drained too.
        _, *worker_dirs = spool_dirs(settings.resolved_spool_dir, settings.workers)
        executor = ThreadExecutor(
            WriterResources(
                app[SPOOL],
                app[QUARANTINE],
                app[BACKEND].writer,
                worker_spools=[Spool(directory, sync=settings.spool_sync) for directory in worker_dirs],
            )
        )
    metrics = app[METRICS]

    def count_batch(result: DrainResult | None) -> None:
        if result is None:
            metrics.writer_failures.inc()
            return
        metrics.writer_batches.inc()
        metrics.events_stored.inc(result.inserted)
        metrics.duplicates_ignored.inc(result.events - result.inserted)

    writer = WriteScheduler(
        executor,
        flush_period_s=settings.flush_period_s,
        batch_max_entries=settings.writer_batch_max_entries,
        batch_max_events=settings.writer_batch_max_events,
        backlog_threshold_events=settings.backlog_threshold_events,
        on_batch=count_batch,
        # In a `--workers N` server, worker 0 runs the retention rounds for all.
        retention_s=settings.retention_s if worker is None or worker.index == 0 else None,
    )
    app[WRITE_SCHEDULER] = writer
    writer.start()
    yield
    await writer.close(drain_timeout_s=settings.shutdown_drain_s)


async def _committer_ctx(app: web.Application) -> AsyncIterator[None]:
    scheduler, accepted = app[WRITE_SCHEDULER], app[METRICS].events_accepted

    def committed(event_count: int) -> None:
        # Counted once per group commit rather than once per request: prometheus-client's
        # inc() is four Python calls and a lock, a part of a 1-event post's own work.
        accepted.inc(event_count)
        scheduler.notify_appended(event_count)

    committer = GroupCommitter(app[SPOOL], on_committed=committed, commit_in_loop=app[SETTINGS].spool_sync == "normal")
    app[COMMITTER] = committer
    app[ACCEPT] = AcceptPath(app[SETTINGS], committer, app[COUNTERS])
    committer.start()
    yield
    await committer.close()
