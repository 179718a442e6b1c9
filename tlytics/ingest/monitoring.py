"""GET /health and GET /metrics: what a load balancer, Docker's health check and Prometheus
read. /health answers 200 while the server can accept events durably and 503 when it cannot
(a store that is down is a problem it names, not a 503: the spool holds the events meanwhile);
both read their figures off the event loop, so they answer while a slow query runs."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tlytics import __version__
from tlytics.errors import SpoolError, StoreError
from tlytics.ingest.error_answers import RETRY_AFTER_S
from tlytics.ingest.off_loop import run_read
from tlytics.ingest.responses import json_response
from tlytics.ingest.state import COMMITTER, COUNTERS, METRICS, QUARANTINE, SETTINGS, SPOOL, STORE, WRITE_SCHEDULER


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 while the server can accept events durably, else 503 (so a load
    balancer or Docker's health check sees it), with what an operator wants to see first."""
    app = request.app
    settings = app[SETTINGS]
    spool = app[SPOOL]
    store = app[STORE]
    writer = app[WRITE_SCHEDULER]
    committer = app[COMMITTER]
    quarantine = app[QUARANTINE]

    def read_figures() -> tuple[int, int, float, int, int, int, int | None, str | None]:
        try:
            stored: int | None = store.count()
            store_error = None
        except StoreError as exc:
            stored, store_error = None, str(exc)
        figures = spool.count(), spool.size_bytes(), spool.oldest_age_s(), spool.disk_free_bytes()
        return *figures, quarantine.count(), quarantine.size_bytes(), stored, store_error

    try:
        (
            spool_entries,
            spool_bytes,
            lag_s,
            spool_free,
            quarantined,
            quarantine_bytes,
            stored_events,
            store_error,
        ) = await run_read(request, read_figures)
    except (SpoolError, OSError) as exc:
        # Not an error answer but the health report itself: a 503 with the reason.
        return json_response({"status": "unavailable", "port": settings.port, "error": str(exc)}, status=503)
    problems = []
    if spool_bytes >= settings.spool_max_bytes:
        problems.append(f"spool is full ({spool_bytes} of {settings.spool_max_bytes} bytes)")
    if settings.spool_min_free_bytes and spool_free < settings.spool_min_free_bytes:
        problems.append(
            f"spool disk is full ({spool_free} bytes free, {settings.spool_min_free_bytes} kept in reserve)"
        )
    if committer.failing_since is not None:
        problems.append(f"spool writes are failing: {committer.last_error}")
    unavailable = bool(problems)
    # The store failing (PostgreSQL down, SQLite locked by another process) needs an operator,
    # but events are still acknowledged durably into the spool and written once it is back:
    # listed, while the status stays healthy and 200 so the server stays in rotation (the
    # spool filling up is what turns it into a 503).
    if writer.consecutive_failures:
        problems.append(
            f"the store is not taking writes ({writer.consecutive_failures} failed attempts in a row:"
            f" {writer.last_error}); acknowledged events wait in the spool and are written once it is back"
        )
    if store_error is not None:
        problems.append(f"the store does not answer reads ({store_error}); reads answer 503 until it does")
    if quarantined:
        # Needs an operator (the entries were acknowledged), but ingest still works: listed,
        # without turning the answer into a 503 that would take the server out of rotation.
        problems.append(
            f"{quarantined} unreadable spool entries quarantined in {quarantine.directory}"
            " (acknowledged events that could not be stored; inspect them, tlytics-replay can resend them)"
        )
    return json_response(
        {
            "status": "unavailable" if unavailable else "healthy",
            "port": settings.port,
            "version": __version__,
            "problems": problems,
            "spool_entries": spool_entries,
            "spool_bytes": spool_bytes,
            "spool_max_bytes": settings.spool_max_bytes,
            "spool_disk_free_bytes": spool_free,
            "quarantined_entries": quarantined,
            "quarantine_bytes": quarantine_bytes,
            "writer_lag_s": round(lag_s, 3),
            "writer_last_error": writer.last_error,
            "store": "ok" if store_error is None else store_error,
            "stored_events": stored_events,
            "accepted_events": app[COUNTERS].accepted_events,
            "accepted_requests": app[COUNTERS].accepted_requests,
        },
        status=503 if unavailable else 200,
        headers={"Retry-After": RETRY_AFTER_S} if unavailable else None,
    )


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    app = request.app
    spool = app[SPOOL]
    quarantine = app[QUARANTINE]
    figures = app[METRICS]

    def refresh() -> bytes:
        figures.spool_entries.set(spool.count())
        figures.spool_bytes.set(spool.size_bytes())
        figures.quarantined_entries.set(quarantine.count())
        figures.quarantine_bytes.set(quarantine.size_bytes())
        figures.writer_lag_seconds.set(spool.oldest_age_s())
        return generate_latest(figures.registry)

    body = await run_read(request, refresh)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
