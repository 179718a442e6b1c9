"""API keys: `Authorization: Bearer <key>` on write and read endpoints.

When write keys are configured, posting events needs one of them; when read keys are
configured, every read endpoint needs one of those. The two sets are separate, so a write key
never reads and a read key never writes. Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import Literal

from aiohttp import web

from tlytics.ingest.keys import SETTINGS
from tlytics.ingest.responses import ApiError

Access = Literal["write", "read"]

# What each endpoint needs; anything not listed (health, metrics?) is open. Read endpoints
# added later are listed here too.
ENDPOINT_ACCESS: dict[tuple[str, str], Access] = {
    ("POST", "/events"): "write",
    ("POST", "/batch"): "write",
    ("GET", "/view"): "read",
    ("GET", "/export"): "read",
    ("GET", "/stats"): "read",
    ("GET", "/keys"): "read",
    ("DELETE", "/events"): "read",  # erasure: the issue asks for a read key
    ("POST", "/lookup"): "read",
    ("GET", "/metrics"): "read",
}


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
    """Raise a 401 ApiError unless the request carries a key its endpoint accepts."""
    access = ENDPOINT_ACCESS.get((request.method, request.path))
    if access is None:
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
