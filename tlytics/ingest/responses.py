"""JSON answers: every success and every error the API gives is a JSON body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

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


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


# The headers of an accepted post's answer, the security headers included (so the middleware's
# hook has nothing to add but the request id), copied into each answer.
_ACCEPTED_HEADERS = CIMultiDict({"Content-Type": "application/json", **SECURITY_HEADERS})
# Accepted posts' bodies by event count: most posts carry one of a few counts.
_ACCEPTED_BODIES: dict[int, bytes] = {}
_ACCEPTED_BODIES_MAX = 1024


def accepted_response(count: int) -> web.Response:
    """The 200 of a post whose `count` events were spooled: its body encoded once per count,
    its headers copied from a ready-made set (this answer goes out for every post)."""
    body = _ACCEPTED_BODIES.get(count)
    if body is None:
        body = orjson.dumps({"message": f"Successfully queued {count} events", "count": count})
        if len(_ACCEPTED_BODIES) < _ACCEPTED_BODIES_MAX:
            _ACCEPTED_BODIES[count] = body
    return web.Response(body=body, headers=_ACCEPTED_HEADERS)


def json_error(status: int, message: str, *, headers: Mapping[str, str] | None = None, **details: Any) -> web.Response:
    """An error answer `{"error": message, **details}`."""
    return json_response({"error": message, **details}, status=status, headers=headers)


class ApiError(Exception):
    """An answer that is HTTP and nothing else (a query parameter, a key, a content type):
    raised by handlers, answered as it is by the middleware. Errors with a meaning beyond HTTP
    are the typed errors of `tlytics.errors`, mapped to their answers in `error_answers`."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.details = details

    def response(self) -> web.Response:
        return json_error(self.status, self.message, headers=self.headers, **self.details)
