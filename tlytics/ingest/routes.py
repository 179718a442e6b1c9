"""The route table: every (method, path) the server answers, its handler and its access level,
declared together in one place.

A route missing here is a 404 or 405; a route added to the router any other way declares no
level and is refused with a 403 (deny by default, see `auth`). A GET route also answers HEAD,
at the same level, declared here rather than implicitly by aiohttp.

A question about the data (a `read`, `stats` or `admin` route) refuses a query parameter it
does not take, with a 400 naming it: a misspelt filter (`were=`, `sinse=`) must not answer,
or erase, as if it were not there. Open and write routes ignore what they do not take: SDKs,
browsers and load balancers add parameters of their own (posthog-js's `ver`, `ip`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

import tlytics.ingest.accept as accept
import tlytics.ingest.erase as erase
import tlytics.ingest.export as export
import tlytics.ingest.funnel as funnel
import tlytics.ingest.lookup as lookup
import tlytics.ingest.monitoring as monitoring
import tlytics.ingest.posthog as posthog
import tlytics.ingest.segment as segment
import tlytics.ingest.static_pages as static_pages
import tlytics.ingest.stats as stats
import tlytics.ingest.view as view
import tlytics.ingest.whoami as whoami
from tlytics.ingest.auth import ROUTE_ACCESS, Access, RouteAccess
from tlytics.ingest.cors import cors_enabled, install_cors, preflight
from tlytics.ingest.query import FILTER_PARAMETERS, ORDER_PARAMETERS, PAGE_PARAMETERS
from tlytics.ingest.responses import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One endpoint: who may call it is part of its declaration."""

    method: str
    path: str
    handler: Handler
    access: Access
    # Other SDKs' routes: the key may come in the body or a Basic header (see auth.admit_key).
    key_in_body: bool = False
    # The query parameters the route takes: openapi.json documents exactly these, and its
    # handler reads these and no other (tests/test_openapi_complete.py checks both sides).
    query: tuple[str, ...] = ()


_STATS_PARAMETERS = ("interval", "tz", "unique", "breakdown", "limit", "compare", *FILTER_PARAMETERS)
# No `key`: the steps are the keys a funnel reads (a key is refused, a 400).
_FUNNEL_PARAMETERS = ("steps", "by", "within", "since", "until", "where")
# `compression` (gzip-js, base64), and posthog-js's `_`: when it sent the request (ms).
_POSTHOG_PARAMETERS = ("compression", "_")

ROUTES = (
    Route("POST", "/events", accept.post_events, access="write"),
    Route("DELETE", "/events", erase.erase_events, access="admin", query=FILTER_PARAMETERS),
    Route("POST", "/batch", accept.post_batch, access="write"),
    Route("GET", "/health", monitoring.health, access="open"),
    Route("GET", "/view", view.view, access="read", query=(*PAGE_PARAMETERS, *FILTER_PARAMETERS, *ORDER_PARAMETERS)),
    Route("GET", "/export", export.export, access="read", query=("format", *FILTER_PARAMETERS, *ORDER_PARAMETERS)),
    Route("GET", "/stats", stats.stats, access="stats", query=_STATS_PARAMETERS),
    Route("GET", "/keys", stats.keys, access="stats"),
    Route("GET", "/funnel", funnel.funnel, access="stats", query=_FUNNEL_PARAMETERS),
    Route("GET", "/", static_pages.dashboard, access="open"),
    Route("POST", "/lookup", lookup.lookup, access="read"),
    Route("GET", "/metrics", monitoring.metrics, access="read"),
    Route("GET", "/openapi.json", static_pages.openapi, access="open"),
    # What the presented key may do (the dashboard asks, to hide what its key cannot read).
    Route("GET", "/whoami", whoami.whoami, access="open"),
    # The dashboard's own files (scripts, styles, the chart library): no data, open.
    Route("GET", "/static/{name}", static_pages.static_file, access="open"),
    # The page script (`<script src=".../t.js" data-key=...>`): no data, open.
    Route("GET", "/t.js", static_pages.page_script, access="open"),
    # Segment's HTTP Tracking API (tlytics.ingest.segment).
    Route("POST", "/v1/track", segment.post_track, access="write", key_in_body=True),
    Route("POST", "/v1/page", segment.post_page, access="write", key_in_body=True),
    Route("POST", "/v1/screen", segment.post_screen, access="write", key_in_body=True),
    Route("POST", "/v1/identify", segment.post_identify, access="write", key_in_body=True),
    Route("POST", "/v1/group", segment.post_group, access="write", key_in_body=True),
    Route("POST", "/v1/alias", segment.post_alias, access="write", key_in_body=True),
    Route("POST", "/v1/batch", segment.post_batch, access="write", key_in_body=True),
    Route("POST", "/v1/import", segment.post_batch, access="write", key_in_body=True),
    # PostHog's capture API (tlytics.ingest.posthog).
    Route("POST", "/capture/", posthog.capture, access="write", key_in_body=True, query=_POSTHOG_PARAMETERS),
    Route("POST", "/batch/", posthog.capture, access="write", key_in_body=True, query=_POSTHOG_PARAMETERS),
    Route("POST", "/e/", posthog.capture, access="write", key_in_body=True, query=_POSTHOG_PARAMETERS),
    Route("POST", "/i/v0/e/", posthog.capture, access="write", key_in_body=True, query=_POSTHOG_PARAMETERS),
)


def add_routes(app: web.Application) -> None:
    """Add every route of the table to `app`'s router, each with its declared level; with
    `--cors-origin`, also each write route's preflight (OPTIONS, open: a browser sends it
    without credentials) and the CORS rules (`cors.install_cors`). Without it no route answers
    OPTIONS (405)."""
    route_access = RouteAccess()
    app[ROUTE_ACCESS] = route_access
    with_preflight = cors_enabled(app)
    for route in ROUTES:
        # HEAD answers what GET answers (status, headers, Content-Length).
        handler = route.handler if route.access in ("open", "write") else _refusing_unknown_parameters(route)
        for method in ("GET", "HEAD") if route.method == "GET" else (route.method,):
            added = app.router.add_route(method, route.path, handler)
            route_access.declare(added, route.access, key_in_body=route.key_in_body)
        if with_preflight and route.access == "write" and route.method == "POST":
            route_access.declare(app.router.add_route("OPTIONS", route.path, preflight), "open")
    install_cors(app)


def _refusing_unknown_parameters(route: Route) -> Handler:
    """`route`'s handler, behind a 400 for a query parameter the route does not declare."""
    taken = frozenset(route.query)
    handler = route.handler

    async def checked(request: web.Request) -> web.StreamResponse:
        # rel_url.query: the parameters as sent, without reading them as the handler would.
        for name in request.rel_url.query:
            if name not in taken:
                offered = ", ".join(route.query) if route.query else "no query parameters"
                raise ApiError(
                    400, f"unknown query parameter {name!r}: {route.method} {route.path} takes {offered}", field=name
                )
        return await handler(request)

    return checked
