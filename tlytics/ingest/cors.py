"""Web pages as senders (`--cors-origin`): CORS on the write routes, and nothing else.

Off by default: no OPTIONS route exists, no answer carries an Access-Control header, and a
`text/plain` body is refused, as before. With at least one origin:
- each write route also answers its preflight (`OPTIONS`, declared `open` in the route table by
  `routes.add_routes`): 204 with the CORS headers for an allowed origin, 403 for another;
- answers to an allowed origin on a write route carry `Access-Control-Allow-Origin`, errors
  included, so a page can read why it was refused;
- a write route takes a `text/plain` body as JSON (what `navigator.sendBeacon` and Segment's
  analytics.js send, to avoid a preflight);
- a request from another site's page (an `Origin` header naming neither this server nor an
  allowed origin) is refused on a write route, and a stats, read or admin key presented from
  any other site's page is refused everywhere: a key written in a page is public, so only a
  write key may be used there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from tlytics.ingest.auth import bearer_token, request_access
from tlytics.ingest.responses import ApiError
from tlytics.ingest.state import KEYS, SETTINGS
from tlytics.origins import ANY_ORIGIN

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What a page may send: JSON (or text/plain, or PostHog's forms), gzip, a key in Authorization.
_ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization, X-Request-Id"
_EXPOSED_HEADERS = "Retry-After, X-Request-Id"
# Browsers cap this (Chromium at 2 h); 10 minutes keeps a changed --cors-origin effective soon.
_PREFLIGHT_MAX_AGE_S = "600"
BEACON_CONTENT_TYPE = "text/plain"


def cors_enabled(app: web.Application) -> bool:
    return bool(app[SETTINGS].cors_origins)


def _origin_allowed(app: web.Application, origin: str) -> bool:
    origins = app[SETTINGS].cors_origins
    return ANY_ORIGIN in origins or origin in origins


def _same_site(request: web.Request, origin: str) -> bool:
    """Whether `origin` is this server as the browser reached it (the dashboard's own requests)."""
    return urlsplit(origin).netloc == request.host


def _is_write_route(request: web.Request) -> bool:
    return request_access(request) == "write"


def beacon_body_allowed(request: web.Request) -> bool:
    """Whether this request's `text/plain` body is read as JSON: on a write route, with CORS on."""
    return request.content_type == BEACON_CONTENT_TYPE and _is_write_route(request) and cors_enabled(request.app)


async def preflight(request: web.Request) -> web.Response:
    """OPTIONS on a write route: the browser asks whether its page may POST here."""
    origin = request.headers.get("Origin")
    requested = request.headers.get("Access-Control-Request-Method")
    if origin is None or requested is None:
        raise ApiError(400, "not a CORS preflight: it needs Origin and Access-Control-Request-Method", field="Origin")
    if not _origin_allowed(request.app, origin):
        raise ApiError(403, f"pages of {origin[:200]} may not send events here (see --cors-origin)", field="Origin")
    if requested.upper() != "POST":
        raise ApiError(403, f"a page may only POST here, not {requested[:20]}", field="Access-Control-Request-Method")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
            "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE_S,
        },
    )


@web.middleware
async def refuse_other_sites(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Inside the access check (so its refusals are JSON answers like any other): a page of a
    site not allowed may not post, and no page may use a key that reads."""
    origin = request.headers.get("Origin")
    if origin is not None and not _same_site(request, origin):
        if _is_write_route(request) and not _origin_allowed(request.app, origin):
            raise ApiError(403, f"pages of {origin[:200]} may not send events here (see --cors-origin)", field="Origin")
        token = bearer_token(request)
        key = request.app[KEYS].ring.find(token) if token is not None else None
        if key is not None and key.scope != "write":
            raise ApiError(
                403,
                f"a {key.scope} key may not be used from a web page (a key in a page is public): only a write key",
                field="Authorization",
            )
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` hook: the CORS headers on answers to an allowed page on a write
    route (preflight, success or error)."""
    origin = request.headers.get("Origin")
    is_preflight = request.method == "OPTIONS" and request.match_info.http_exception is None
    if origin is None or not (is_preflight or _is_write_route(request)):
        return
    if not _origin_allowed(request.app, origin):
        return
    origins = request.app[SETTINGS].cors_origins
    response.headers["Access-Control-Allow-Origin"] = ANY_ORIGIN if ANY_ORIGIN in origins else origin
    response.headers["Access-Control-Expose-Headers"] = _EXPOSED_HEADERS
    response.headers.add("Vary", "Origin")


def install_cors(app: web.Application) -> None:
    """The page rules and headers, when `--cors-origin` names any origin (else nothing: no cost
    to a request, no behaviour change)."""
    if not cors_enabled(app):
        return
    app.middlewares.append(refuse_other_sites)
    app.on_response_prepare.append(cors_headers)
