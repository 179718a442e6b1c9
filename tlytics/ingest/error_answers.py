"""Errors to HTTP answers, in one place (as httpx maps transport errors once): which status,
headers and JSON details each error the server raises on purpose is answered with.

Handlers raise the typed errors of `tlytics.errors` (a refused body is an `InvalidRequest`, a
full spool a `SpoolFull`) and `ApiError` only for answers that are HTTP and nothing else (a
query-string parameter, a key, a content type, a body that did not arrive); the middleware
asks `error_answer` how to answer any of them. Anything not mapped here is a server bug: 500.
"""

from __future__ import annotations

from aiohttp import web

from tlytics.errors import (
    InvalidRequest,
    ReadTimedOut,
    RequestTooLarge,
    SpoolError,
    SpoolFull,
    StoreUnavailable,
    TlyticsError,
)
from tlytics.ingest.responses import ApiError
from tlytics.writer import ErasureIncomplete

# What a client should wait before it retries a 503: the spool drains within a flush period.
RETRY_AFTER_S = "1"
_RETRY_LATER = {"Retry-After": RETRY_AFTER_S}


def _tlytics_error_answer(exc: TlyticsError) -> ApiError | None:
    # Most specific class first: RequestTooLarge is an InvalidRequest, SpoolFull a SpoolError.
    if isinstance(exc, RequestTooLarge):
        return ApiError(413, exc.message, **exc.details)
    if isinstance(exc, InvalidRequest):
        return ApiError(400, exc.message, **exc.details)
    if isinstance(exc, SpoolFull):
        return ApiError(503, f"spool is full, retry later: {exc}", headers=_RETRY_LATER)
    if isinstance(exc, SpoolError):
        return ApiError(503, f"cannot accept durably now, retry later: {exc}", headers=_RETRY_LATER)
    if isinstance(exc, ErasureIncomplete):
        return ApiError(503, f"cannot erase now, retry later: {exc}", headers=_RETRY_LATER, deleted=exc.deleted)
    if isinstance(exc, ReadTimedOut):
        # The store is fine: this read asked too much of it in the time it has.
        return ApiError(503, str(exc), headers=_RETRY_LATER, read_timeout_s=exc.budget_s)
    if isinstance(exc, StoreUnavailable):
        # PostgreSQL down or restarting: nothing is wrong with the request, and a retry will do
        # once it is back. (Any other StoreError, a disk I/O error, is a 500.)
        return ApiError(503, f"the store cannot answer now, retry later: {exc}", headers=_RETRY_LATER)
    return None


def _router_answer(request: web.Request, exc: web.HTTPException) -> ApiError:
    """aiohttp's own errors (no route, wrong method, ...) as JSON, keeping `Allow` on a 405."""
    message = exc.reason
    if exc.status == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif exc.status == 405:
        message = f"method {request.method} is not allowed on {request.path}"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return ApiError(exc.status, message, headers=headers)


def error_answer(request: web.Request, exc: Exception) -> ApiError | None:
    """The answer to `exc` raised while serving `request`; None when it is not an error the
    server raises on purpose (then it is a bug, answered with a 500 by the middleware)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TlyticsError):
        return _tlytics_error_answer(exc)
    if isinstance(exc, web.HTTPException):
        return _router_answer(request, exc)
    return None


INTERNAL_ERROR = ApiError(500, "internal error; the request was not accepted")
