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

import tlytics.ingest.request_line as request_line
from tlytics.ingest.auth import ACCESS_GATE, admit, request_access
from tlytics.ingest.error_answers import INTERNAL_ERROR, error_answer
from tlytics.ingest.responses import SECURITY_HEADERS

log = structlog.get_logger("tlytics.ingest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
# An id a proxy or client sent is kept only if it cannot forge or break a log line.
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@web.middleware
async def errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a JSON answer and write one canonical log line per request."""
    started = time.perf_counter()
    # An id a proxy or client sent, if well formed; else 64 random bits from the random module
    # (reseeded in a forked child): unique enough to find a request in the logs, without a
    # system call per request as os.urandom makes.
    request_id = request.headers.get(REQUEST_ID_HEADER)
    if request_id is None or not _WELL_FORMED_REQUEST_ID.fullmatch(request_id):
        request_id = f"{random.getrandbits(64):016x}"
    request[REQUEST_ID] = request_id
    method = request.method
    # Each request runs in a task of its own, but the context it copies may hold a previous
    # binding (a test, a keep-alive connection's first request): start from nothing.
    request_line.start_request(request_id, method, request.path)
    response: web.StreamResponse
    failure: Exception | None = None
    match_info = request.match_info
    gate = match_info.current_app[ACCESS_GATE]
    try:
        admit(request, match_info, gate)
        response = await handler(request)
    except Exception as exc:
        answer = error_answer(request, exc)
        if answer is None:
            failure, answer = exc, INTERNAL_ERROR
        elif answer.status >= 500:
            # Why the server could not do it now (spool full, store busy): the operator's cue.
            request_line.bind("error", answer.message)
        response = answer.response()
    duration_s = time.perf_counter() - started
    status = response.status
    metrics = gate.metrics
    metrics.observe_request(method, match_info.route, status, duration_s)
    if status >= 400 and request_access(request) == "write":
        metrics.rejected(status)
    duration_ms = round(duration_s * 1000, 3)
    if failure is not None:
        log.error("request", status=status, duration_ms=duration_ms, remote=request.remote, exc_info=failure)
    else:
        level = "warning" if status >= 500 else "info"
        request_line.log_line(log, level, "request", status=status, duration_ms=duration_ms, remote=request.remote)
    return response


async def answer_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` hook: the security headers and the request id, set as the
    headers go out, so a streamed answer (/export) gets them as well as a finished one. An
    answer built with them (`responses.accepted_response`) is not updated again."""
    headers = response.headers
    if "X-Frame-Options" not in headers:
        headers.update(SECURITY_HEADERS)
    try:
        headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    except KeyError:  # an answer aiohttp made before the middleware ran (no request id)
        pass
