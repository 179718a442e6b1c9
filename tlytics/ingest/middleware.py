"""What every request goes through: a request id, the access check and rate limit, errors turned into JSON
answers (`error_answers` says which), the request metrics, one canonical log line, and the
headers every answer carries.

The log line is built from structlog's context: the middleware binds the request id, method
and path when the request comes in, handlers bind what they learn (`events_accepted`,
`events_deleted`, ...), and the line is written once the answer is known. So any other line
logged while serving the request carries the same id. A 500 logs its traceback on that line.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from tlytics.ingest.auth import admit, request_access
from tlytics.ingest.error_answers import INTERNAL_ERROR, error_answer
from tlytics.ingest.state import METRICS

log = structlog.get_logger("tlytics.ingest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
# An id a proxy or client sent is kept only if it cannot forge or break a log line.
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get(REQUEST_ID_HEADER)
    if incoming is not None and _WELL_FORMED_REQUEST_ID.fullmatch(incoming):
        return incoming
    # 64 random bits from the random module (reseeded in a forked child): unique enough to
    # find a request in the logs, without a system call per request as os.urandom makes.
    return f"{random.getrandbits(64):016x}"


@web.middleware
async def errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a JSON answer and write one canonical log line per request."""
    started = time.perf_counter()
    request_id = request[REQUEST_ID] = _request_id(request)
    # Each request runs in a task of its own, but the context it copies may hold a previous
    # binding (a test, a keep-alive connection's first request): start from nothing.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, method=request.method, path=request.path)
    response: web.StreamResponse
    failure: Exception | None = None
    try:
        admit(request)
        response = await handler(request)
    except Exception as exc:
        answer = error_answer(request, exc)
        if answer is None:
            failure, answer = exc, INTERNAL_ERROR
        elif answer.status >= 500:
            # Why the server could not do it now (spool full, store busy): the operator's cue.
            structlog.contextvars.bind_contextvars(error=answer.message)
        response = answer.response()
    duration_s = time.perf_counter() - started
    metrics = request.app[METRICS]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics.observe_request(request.method, route, response.status, duration_s)
    if response.status >= 400 and request_access(request) == "write":
        metrics.rejected(response.status)
    duration_ms = round(duration_s * 1000, 3)
    if failure is not None:
        log.error("request", status=response.status, duration_ms=duration_ms, remote=request.remote, exc_info=failure)
    elif response.status >= 500:
        log.warning("request", status=response.status, duration_ms=duration_ms, remote=request.remote)
    else:
        log.info("request", status=response.status, duration_ms=duration_ms, remote=request.remote)
    return response


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


async def answer_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` hook: the security headers and the request id, set as the
    headers go out, so a streamed answer (/export) gets them as well as a finished one."""
    response.headers.update(SECURITY_HEADERS)
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
