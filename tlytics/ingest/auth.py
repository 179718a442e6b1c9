"""Access control, deny by default: every route declares its level in the route table
(`routes.py`), next to its path and handler.

A route is `open` (anyone), `write` (posting events) or `read` (everything that reveals
stored events or figures). The level belongs to the route object the router matched, not to
the raw path, so a percent-encoded path or an implicit HEAD gets exactly the level of the
route it reaches; a matched route with no declared level is refused. When write keys are
configured, a `write` route needs `Authorization: Bearer <one of them>`; when read keys are
configured, a `read` route needs one of those. The two sets are separate, so a write key never
reads and a read key never writes. Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import Literal

import structlog
from aiohttp import web

from tlytics.ingest.responses import ApiError
from tlytics.ingest.state import SETTINGS

log = structlog.get_logger("tlytics.ingest")

Access = Literal["open", "write", "read"]


class RouteAccess:
    """The access level each route declared when it was added to the router."""

    def __init__(self) -> None:
        self._levels: dict[web.AbstractRoute, Access] = {}

    def declare(self, route: web.AbstractRoute, access: Access) -> None:
        self._levels[route] = access

    def level(self, route: web.AbstractRoute) -> Access | None:
        """The declared level of `route`, or None when it declared none (then it is refused)."""
        return self._levels.get(route)


ROUTE_ACCESS = web.AppKey("route_access", RouteAccess)


def request_access(request: web.Request) -> Access | None:
    """The level of the route `request` matched; None when it matched none or has none."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return None
    return request.app[ROUTE_ACCESS].level(match_info.route)


def _bearer_token(request: web.Request) -> bytes | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode()


def key_matches(token: bytes, keys: tuple[str, ...]) -> bool:
    """Whether `token` is one of `keys`, comparing against every key in constant time."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key.encode())
    return found


def require_access(request: web.Request) -> None:
    """Raise a 401 ApiError unless the request carries a key its route accepts (403 when the
    route declared no level)."""
    if request.match_info.http_exception is not None:
        return  # no route matched: the router's 404/405 answers, no handler runs
    access = request_access(request)
    if access is None:
        resource = request.match_info.route.resource
        route = f"{request.method} {resource.canonical if resource is not None else request.path}"
        # A programming error (a route added without `access=`): refuse rather than guess.
        log.error("route_without_access_level", route=route)
        raise ApiError(403, f"{route} has no declared access level, so it is refused")
    if access == "open":
        return
    settings = request.app[SETTINGS]
    keys = settings.write_keys if access == "write" else settings.read_keys
    if not keys:
        return
    token = _bearer_token(request)
    if token is None or not key_matches(token, keys):
        raise ApiError(
            401,
            f"this endpoint needs a {access} key: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="tlytics"'},
        )
