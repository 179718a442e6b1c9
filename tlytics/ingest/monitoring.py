"""GET /health and GET /metrics: what a load balancer, Docker's health check and Prometheus
read. /health answers 200 while the server can accept events durably and stores them, 503 when
it cannot: the spool full or failing, or a store that has not answered since start or for
`--store-unhealthy-after` (a store down for a moment is a problem it names, not a 503: the
spool holds the events meanwhile). Both read their figures on threads of their own (see
health_watch), never behind the reads, so they answer while slow queries run.

/health is open: to anyone it says only whether the server is healthy and what kind of problem
it has (`causes`, a short fixed vocabulary). The figures, the texts naming the store (its host,
its user, the driver's error) and the counts are for whoever may read: a read key, or anyone
while no reading key is set.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tlytics import __version__
from tlytics.ingest.auth import may_call, presented_key
from tlytics.ingest.error_answers import RETRY_AFTER_S
from tlytics.ingest.health_watch import (
    SPOOL_FIGURES,
    SPOOL_FIGURES_WAIT_S,
    STORE_HEALTH,
    SpoolFigures,
    read_figures,
    spool_figures,
)
from tlytics.ingest.responses import json_response
from tlytics.ingest.state import (
    COMMITTER,
    COUNTERS,
    KEYS,
    METRICS,
    QUARANTINE,
    SETTINGS,
    WRITE_SCHEDULER,
)

# Every cause /health may name, for anyone to read (the details are for readers).
CAUSES = (
    "spool_full",
    "spool_disk_full",
    "spool_failing",
    "spool_unreadable",
    "store_unreachable",
    "writer_failing",
    "entries_quarantined",
)


def _may_read_details(request: web.Request) -> bool:
    """Whether the request may see the details: it presents a key that opens raw reads, or
    reading needs no key here. A missing or wrong key is not refused: /health stays open."""
    ring = request.app[KEYS].ring
    key = presented_key(request, ring) if ring.keys else None
    return may_call(ring, "read", key)


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 while the server can accept and store events, else 503 (so a load
    balancer or Docker's health check sees it), with what an operator wants to see first."""
    app = request.app
    figures = await read_figures(app[STORE_HEALTH], app[SPOOL_FIGURES])
    if isinstance(figures, Exception):
        # Not an error answer but the health report itself: a 503 with the reason.
        body: dict[str, Any] = {
            "status": "unavailable",
            "port": _listening_port(request),
            "causes": ["spool_unreadable"],
        }
        if _may_read_details(request):
            body["error"] = str(figures) or f"the spool's figures did not come within {SPOOL_FIGURES_WAIT_S:g} s"
        return json_response(body, status=503, headers={"Retry-After": RETRY_AFTER_S})
    causes, problems, unavailable = _problems(request.app, figures)
    body = {"status": "unavailable" if unavailable else "healthy", "port": _listening_port(request), "causes": causes}
    if _may_read_details(request):
        body.update(_details(request.app, figures, problems))
    return json_response(
        body,
        status=503 if unavailable else 200,
        headers={"Retry-After": RETRY_AFTER_S} if unavailable else None,
    )


def _problems(app: web.Application, figures: SpoolFigures) -> tuple[list[str], list[str], bool]:
    """The causes (kinds), the problems (texts, for readers) and whether the server is unavailable."""
    settings = app[SETTINGS]
    store = app[STORE_HEALTH]
    writer = app[WRITE_SCHEDULER]
    committer = app[COMMITTER]
    causes: list[str] = []
    problems: list[str] = []
    if figures.size_bytes >= settings.spool_max_bytes:
        causes.append("spool_full")
        problems.append(f"spool is full ({figures.size_bytes} of {settings.spool_max_bytes} bytes)")
    if settings.spool_min_free_bytes and figures.disk_free_bytes < settings.spool_min_free_bytes:
        causes.append("spool_disk_full")
        problems.append(
            f"spool disk is full ({figures.disk_free_bytes} bytes free,"
            f" {settings.spool_min_free_bytes} kept in reserve)"
        )
    if committer.failing_since is not None:
        causes.append("spool_failing")
        problems.append(f"spool writes are failing: {committer.last_error}")
    unavailable = bool(causes)
    if store.failing_since is not None:
        # Events are still acknowledged durably into the spool and written once the store is
        # back: a 503 only once its silence is more than a moment (see StoreHealth.unhealthy).
        unavailable = unavailable or store.unhealthy
        causes.append("store_unreachable")
        since = "since this server started" if store.answered_at is None else f"for {store.failing_for_s:.0f} s"
        problems.append(
            f"the store does not answer ({store.error}) {since}; reads answer 503 until it does,"
            " acknowledged events wait in the spool"
        )
    if writer.consecutive_failures:
        causes.append("writer_failing")
        problems.append(
            f"the store is not taking writes ({writer.consecutive_failures} failed attempts in a row:"
            f" {writer.last_error}); acknowledged events wait in the spool and are written once it is back"
        )
    if figures.quarantined_entries:
        # Needs an operator (the entries were acknowledged), but ingest still works: listed,
        # without turning the answer into a 503 that would take the server out of rotation.
        causes.append("entries_quarantined")
        problems.append(
            f"{figures.quarantined_entries} unreadable spool entries quarantined in"
            f" {app[QUARANTINE].directory} (acknowledged events that could not be stored;"
            " inspect them, tlytics-replay can resend them)"
        )
    return causes, problems, unavailable


def _details(app: web.Application, figures: SpoolFigures, problems: list[str]) -> dict[str, Any]:
    settings = app[SETTINGS]
    store = app[STORE_HEALTH]
    return {
        "version": __version__,
        "problems": problems,
        "spool_entries": figures.entries,
        "spool_bytes": figures.size_bytes,
        "spool_max_bytes": settings.spool_max_bytes,
        "spool_disk_free_bytes": figures.disk_free_bytes,
        "quarantined_entries": figures.quarantined_entries,
        "quarantine_bytes": figures.quarantine_bytes,
        "writer_lag_s": round(figures.oldest_age_s, 3),
        "writer_last_error": app[WRITE_SCHEDULER].last_error,
        "store": "ok" if store.error is None else store.error,
        "stored_events": store.stored_events,
        "accepted_events": app[COUNTERS].accepted_events,
        "accepted_requests": app[COUNTERS].accepted_requests,
    }


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format (the spool's figures read on their own thread)."""
    app = request.app
    figures = app[METRICS]
    spool = await spool_figures(app[SPOOL_FIGURES])
    if not isinstance(spool, Exception):  # else the gauges keep their last values
        figures.spool_entries.set(spool.entries)
        figures.spool_bytes.set(spool.size_bytes)
        figures.quarantined_entries.set(spool.quarantined_entries)
        figures.quarantine_bytes.set(spool.quarantine_bytes)
        figures.writer_lag_seconds.set(spool.oldest_age_s)
    # Off the loop (a thousand histograms take a while to write), not on the reading threads.
    body = await asyncio.to_thread(generate_latest, figures.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _listening_port(request: web.Request) -> int:
    """The configured port, or with `--port 0` the one the system chose (the port this request
    came in on)."""
    if request.app[SETTINGS].port:
        return request.app[SETTINGS].port
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2 and isinstance(sockname[1], int):
        return sockname[1]
    return request.app[SETTINGS].port
