"""The aiohttp application factory: routes, middleware, and each resource's lifetime as a
cleanup context (opened in order at start, closed in reverse at shutdown)."""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import structlog
from aiohttp import web

from tlytics.ingest import handlers, stats
from tlytics.ingest.instance_lock import InstanceLock
from tlytics.ingest.auth import ROUTE_ACCESS, Access, RouteAccess, request_access, require_access
from tlytics.ingest.metrics import Metrics
from tlytics.ingest.keys import COMMITTER, COUNTERS, METRICS, IngestCounters, EVENTS_ACCEPTED, QUARANTINE, READER, SETTINGS, SPOOL, STORE, WRITER
from tlytics.ingest.responses import ApiError, json_error
from tlytics.ingest.settings import Settings
from tlytics.ingest.writer import DrainResult, ProcessExecutor, ThreadExecutor, WriteExecutor, Writer, WriterResources
from tlytics.spool import GroupCommitter, Spool
from tlytics.store import SQLiteReader, SQLiteWriter, migrate_store

log = structlog.get_logger("tlytics.ingest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Store reads at once (each its own thread and read connection); more would only queue on 2 cores.
READER_THREADS = 4


@web.middleware
async def errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a JSON answer and write one canonical log line per request."""
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        require_access(request)
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        message = exc.reason
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = json_error(exc.status, message, headers=headers)
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        response = json_error(500, "internal error; the request was not accepted")
    metrics = request.app[METRICS]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics.request_seconds.labels(request.method, route, str(response.status)).observe(
        time.perf_counter() - started
    )
    if response.status >= 400 and request_access(request) == "write":
        metrics.rejected(response.status)
    log.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        events=request.get(EVENTS_ACCEPTED),
        remote=request.remote,
    )
    return response


def create_app(settings: Settings) -> web.Application:
    """Build the Tlytics server application for `settings`."""
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[errors_and_access_log],
        # Request bodies are decoded by the handlers (handlers._read_body): aiohttp's own
        # decoding answers a corrupt or unsupported body with a plain-text 400 or a 500.
        handler_args={"auto_decompress": False},
    )
    app[SETTINGS] = settings
    app[COUNTERS] = IngestCounters()
    app[METRICS] = Metrics()
    app.cleanup_ctx.extend([_instance_lock_ctx, _spool_ctx, _store_ctx, _writer_ctx, _committer_ctx])
    app.on_startup.append(_warn_if_open)
    app.on_response_prepare.append(_security_headers)
    route_access = RouteAccess()
    app[ROUTE_ACCESS] = route_access

    def add(method: str, path: str, handler: Handler, *, access: Access) -> None:
        # HEAD answers what GET answers (status, headers, Content-Length), so it is added
        # here, with the same level, instead of implicitly by aiohttp.
        for each_method in ("GET", "HEAD") if method == "GET" else (method,):
            route_access.declare(app.router.add_route(each_method, path, handler), access)

    add("POST", "/events", handlers.post_events, access="write")
    add("DELETE", "/events", handlers.erase_events, access="read")  # erasure: scopes come later
    add("POST", "/batch", handlers.post_batch, access="write")
    add("GET", "/health", handlers.health, access="open")
    add("GET", "/view", handlers.view, access="read")
    add("GET", "/export", handlers.export, access="read")
    add("GET", "/stats", stats.stats, access="read")
    add("GET", "/keys", stats.keys, access="read")
    add("GET", "/", handlers.dashboard, access="open")
    for static_route in app.router.add_static("/static", handlers.STATIC_DIR, name="static"):
        route_access.declare(static_route, "open")  # the dashboard's own files, no data
    add("POST", "/lookup", handlers.lookup, access="read")
    add("GET", "/metrics", handlers.metrics, access="read")
    add("GET", "/openapi.json", handlers.openapi, access="open")
    return app


# On every answer, static files and errors included. The policy is the dashboard's: its
# scripts and styles are files of its own (no inline script or style), it fetches only this
# server, and no other site may frame it (clickjacking with a pasted read key). JSON answers
# get it too, which costs nothing and covers any HTML served under /static.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


async def _instance_lock_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    lock = InstanceLock(settings.db_path, settings.resolved_spool_dir)
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
    if not settings.write_keys:
        log.warning("no_write_keys", host=settings.host, hint="anyone who reaches this address can post events; set --write-key")
    if not settings.read_keys:
        log.warning("no_read_keys", host=settings.host, hint="anyone who reaches this address can read events; set --read-key")


async def _spool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    spool_dir = settings.resolved_spool_dir
    app[SPOOL] = Spool(
        spool_dir,
        sync=settings.spool_sync,
        max_bytes=settings.spool_max_bytes,
        min_free_bytes=settings.spool_min_free_bytes,
    )
    app[QUARANTINE] = Spool(spool_dir / "quarantine", sync=settings.spool_sync)
    yield
    app[QUARANTINE].close()
    app[SPOOL].close()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Migrations run here, once, before any reader opens: a reader never sees an old schema.
    # The store syncs at least as hard as the spool: with a "full" spool, a power loss must
    # not lose store commits whose spool entries were already removed.
    migrate_store(settings.db_path, synchronous=settings.spool_sync)
    reader = SQLiteReader(settings.db_path)
    app[STORE] = reader
    # A few threads, each with its own read connection: a slow read holds up only its own.
    app[READER] = ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="store-reader")
    yield
    app[READER].shutdown(wait=True)
    reader.close()


async def _writer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    executor: WriteExecutor
    if settings.writer_process:
        executor = ProcessExecutor(settings, parent_pid=os.getpid())
    else:
        executor = ThreadExecutor(
            WriterResources(
                app[SPOOL],
                app[QUARANTINE],
                lambda: SQLiteWriter(settings.db_path, synchronous=settings.spool_sync),
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

    writer = Writer(
        executor,
        flush_period_s=settings.flush_period_s,
        batch_max_entries=settings.writer_batch_max_entries,
        batch_max_events=settings.writer_batch_max_events,
        backlog_threshold_events=settings.backlog_threshold_events,
        on_batch=count_batch,
        retention_s=settings.retention_s,
    )
    app[WRITER] = writer
    writer.start()
    yield
    await writer.close(drain_timeout_s=settings.shutdown_drain_s)


async def _committer_ctx(app: web.Application) -> AsyncIterator[None]:
    committer = GroupCommitter(
        app[SPOOL],
        on_committed=app[WRITER].notify_appended,
        commit_in_loop=app[SETTINGS].spool_sync == "normal",
    )
    app[COMMITTER] = committer
    committer.start()
    yield
    await committer.close()
