"""Access control, deny by default: every route declares its level in the route table
(`routes.py`), next to its path and handler; then the rate limits.

A route is `open` (anyone) or needs a key of a scope that opens its level: `write` (posting
events), `stats` (aggregates), `read` (raw events), `admin` (erasure); see `keys` for what each
scope opens. The level belongs to the route object the router matched, not to the raw path, so
a percent-encoded path or an implicit HEAD gets exactly the level of the route it reaches; a
matched route with no declared level is refused. Posting needs a key once write keys exist;
reading, once any reading key exists. No key, or an unknown one: 401; a known key whose scope
does not open the route: 403; both name the scope the route needs. A request that passes is
then counted against its rate limit (per key, else per client address). A 401 is counted
against the client address (`--auth-failure-limit`); past it, that address gets 429 on every
route that needs a key until its budget refills, whatever key it presents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import structlog
from aiohttp import web

from tlytics.ingest.keys import ApiKey, KeyRing, Keys, Scope, flag_keys
from tlytics.ingest.keys_file import keys_file_ctx, sighup_without_keys_file_ctx
from tlytics.ingest.metrics import Metrics
from tlytics.ingest.rate_limit import RateLimiter, RateLimits, address_caller, retry_after_header
from tlytics.ingest.responses import ApiError
from tlytics.ingest.state import KEYS, METRICS, RATE_LIMITS, SETTINGS

log = structlog.get_logger("tlytics.ingest")

Access = Literal["open", "write", "stats", "read", "admin"]
# Which scopes' keys, besides its own, open a level (for the answer's hint).
_ALSO_OPENED_BY: dict[Scope, str] = {"stats": " (or a read or admin key)", "read": " (or an admin key)"}
_NEEDS_KEY_HEADERS = {"WWW-Authenticate": 'Bearer realm="tlytics"'}


class RouteAccess:
    """The access level each route declared when it was added to the router."""

    def __init__(self) -> None:
        self._levels: dict[web.AbstractRoute, Access] = {}
        self._key_in_body: set[web.AbstractRoute] = set()

    def declare(self, route: web.AbstractRoute, access: Access, *, key_in_body: bool = False) -> None:
        """`key_in_body`: the route's clients (Segment's, PostHog's SDKs) may present the key
        in the body or a Basic header; its handler then checks it with `admit_key`."""
        self._levels[route] = access
        if key_in_body:
            self._key_in_body.add(route)

    def key_in_body(self, route: web.AbstractRoute) -> bool:
        return route in self._key_in_body

    def level(self, route: web.AbstractRoute) -> Access | None:
        """The declared level of `route`, or None when it declared none (then it is refused)."""
        return self._levels.get(route)


ROUTE_ACCESS = web.AppKey("route_access", RouteAccess)


@dataclass(frozen=True)
class AccessGate:
    """What the middleware asks of its app on every request, in one lookup (each `app[KEY]` is
    a Python call, a share of a 1-event post's own work): the routes' levels, the keys (whose
    ring a reload replaces: read per request), the rate limits and the metrics."""

    route_access: RouteAccess
    keys: Keys
    limits: RateLimits
    metrics: Metrics


# Set once the keys are (at start), from the app's ROUTE_ACCESS, KEYS, RATE_LIMITS and METRICS.
ACCESS_GATE = web.AppKey("access_gate", AccessGate)


def install_access_control(app: web.Application) -> None:
    """The keys (of the settings, and of the keys file, then watched) and the rate limits.
    Called before any other resource is added, so a bad key setting stops the start first."""
    settings = app[SETTINGS]
    app[RATE_LIMITS] = RateLimits(
        settings.rate_limit, settings.read_rate_limit, app[METRICS].registry, auth_failures=settings.auth_failure_rate
    )
    app.cleanup_ctx.append(_keys_ctx)
    app.cleanup_ctx.append(keys_file_ctx if settings.keys_file is not None else sighup_without_keys_file_ctx)


async def _keys_ctx(app: web.Application) -> AsyncIterator[None]:
    # At start rather than in create_app: one secret given two scopes is a TlyticsError the
    # command reports (exit 1), like a bad keys file.
    settings = app[SETTINGS]
    keys_by_scope: dict[Scope, tuple[str, ...]] = {
        "write": settings.write_keys,
        "stats": settings.stats_keys,
        "read": settings.read_keys,
        "admin": settings.admin_keys,
    }
    app[KEYS] = Keys(flag_keys(keys_by_scope), keys_file=settings.keys_file is not None)
    app[ACCESS_GATE] = AccessGate(app[ROUTE_ACCESS], app[KEYS], app[RATE_LIMITS], app[METRICS])
    yield


def request_access(request: web.Request) -> Access | None:
    """The level of the route `request` matched; None when it matched none or has none."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return None
    return request.app[ROUTE_ACCESS].level(match_info.route)


def bearer_token(request: web.Request) -> bytes | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: encoding back the same way
    # gives the bytes the client sent (a token that is not UTF-8 is an unknown key, not a 500).
    return token.strip().encode("utf-8", "surrogateescape")


def presented_key(request: web.Request, ring: KeyRing) -> ApiKey | None:
    """The known key the request presents, if any."""
    token = bearer_token(request)
    return ring.find(token) if token is not None else None


def may_call(ring: KeyRing, level: Scope, key: ApiKey | None) -> bool:
    """Whether a request presenting `key` (None: no known key) may call a route of `level`."""
    if key is not None and key.opens(level):
        return True
    return not ring.needs_key(level)


def _an(scope: str) -> str:
    return f"an {scope}" if scope[0] in "aeiou" else f"a {scope}"


def admit(request: web.Request, match_info: web.UrlMappingMatchInfo, gate: AccessGate) -> None:
    """Raise an ApiError unless the request may go on to its handler: 401/403 for its key
    (403 too when the route declared no level), 429 for its rate limit. `match_info`: the
    request's; `gate`: its app's ACCESS_GATE (the middleware has both at hand)."""
    if match_info.http_exception is not None:
        return  # no route matched: the router's 404/405 answers, no handler runs
    route_access, route = gate.route_access, match_info.route
    access = route_access.level(route)
    if access is None:
        resource = route.resource
        described = f"{request.method} {resource.canonical if resource is not None else request.path}"
        # A programming error (a route added without `access=`): refuse rather than guess.
        log.error("route_without_access_level", route=described)
        raise ApiError(403, f"{described} has no declared access level, so it is refused")
    if access == "open":
        return
    token = bearer_token(request)
    if token is None:
        if route_access.key_in_body(route):
            return  # the handler finds the key in the body or a Basic header and calls admit_key
        if _open_without_key(gate, access):
            return
    admit_key(request, access, token, app=match_info.current_app)


def _open_without_key(gate: AccessGate, access: Scope) -> bool:
    """Whether a request presenting no key passes `admit_key` with nothing to do: its level
    needs no key (so no failed-authentication check either) and it has no rate limit. The
    usual case of a server without keys or limits, checked in one call instead of six."""
    if gate.keys.ring.needs_key(access):
        return False
    limits = gate.limits
    return (limits.write if access == "write" else limits.read) is None


def admit_key(request: web.Request, access: Scope, token: bytes | None, *, app: web.Application | None = None) -> None:
    """The key check and rate limit of `admit`, for the key `token` (None: no key presented);
    `app`: request.app, when the caller has it already."""
    app = app or request.app
    key = _check_key(request, app, access, token)
    _check_rate(request, app, access, key)


def _check_key(request: web.Request, app: web.Application, access: Scope, token: bytes | None) -> ApiKey | None:
    """The known key `token` is (None: none) if it may call a route of `access`; else a 401 (no
    known key) or 403 (a key of another scope), naming the scope needed."""
    ring = app[KEYS].ring
    failures = app[RATE_LIMITS].auth_failures if ring.needs_key(access) else None
    if failures is not None:
        _check_auth_failures(request, failures)
    key = ring.find(token) if token is not None and ring.keys else None
    if key is not None:
        structlog.contextvars.bind_contextvars(key_label=key.label)  # the label, never the secret
    if may_call(ring, access, key):
        return key
    needs = f"this endpoint needs {_an(access)} key{_ALSO_OPENED_BY.get(access, '')}"
    if key is None:
        if failures is not None:
            failures.take(address_caller(request.remote))
        raise ApiError(401, f"{needs}: Authorization: Bearer <key>", headers=_NEEDS_KEY_HEADERS, needs_scope=access)
    raise ApiError(403, f"{needs}; this one ({key.label}) is {_an(key.scope)} key", needs_scope=access, scope=key.scope)


def _check_auth_failures(request: web.Request, failures: RateLimiter) -> None:
    """429 for an address that failed to authenticate too often lately, before its key is
    looked at: otherwise a right guess would stand out from the wrong ones."""
    wait_s = failures.wait_s(address_caller(request.remote))
    if wait_s is None:
        return
    request.app[RATE_LIMITS].limited.labels("auth_failures", "none").inc()
    raise ApiError(
        429,
        f"too many failed authentications from this client address (at most {failures.rate});"
        " retry after Retry-After seconds",
        headers={"Retry-After": retry_after_header(wait_s)},
        rate_limit=str(failures.rate),
        retry_after_s=round(wait_s, 3),
    )


def _check_rate(request: web.Request, app: web.Application, access: Scope, key: ApiKey | None) -> None:
    """Take a token from the caller's bucket (its key's, else its address's), or answer 429."""
    limits = app[RATE_LIMITS]
    limit = "write" if access == "write" else "read"
    limiter = limits.write if limit == "write" else limits.read
    if limiter is None:
        return
    wait_s = limiter.take(key.secret_digest if key is not None else address_caller(request.remote))
    if wait_s is None:
        return
    limits.limited.labels(limit, key.scope if key is not None else "none").inc()
    raise ApiError(
        429,
        f"rate limit of {limiter.rate} reached for this {'key' if key is not None else 'client address'};"
        " retry after Retry-After seconds",
        headers={"Retry-After": retry_after_header(wait_s)},
        rate_limit=str(limiter.rate),
        retry_after_s=round(wait_s, 3),
    )
