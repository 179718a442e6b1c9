"""aiohttp's own refusals, answered as ours: a request its HTTP parser cannot read (a header
with a control character or a trailing CR, as from a keys file with Windows line endings; a
line too long; a malformed request line) gets a JSON 400 that says what kind of fault it is,
never the text of the request, and the log gets one line naming the fault, never the header.

aiohttp answers such a request itself, before any middleware runs (there is no request to
route): its `RequestHandler.handle_error` logs "Error handling request" with the parser's
exception, whose message quotes the offending bytes (an `Authorization` header's key), and
echoes that message in a plain-text 400. aiohttp has no option for either, so `install`
wraps `handle_error` once per process; the wrapper acts only for handlers whose logger is
`PROTOCOL_LOGGER`, which `create_app` hands to aiohttp in its handler arguments: other aiohttp
servers in the same process (a test's fake server) keep aiohttp's behaviour.
"""

from __future__ import annotations

import logging

import orjson
import structlog
from aiohttp import http_exceptions, web, web_protocol

log = structlog.get_logger("tlytics.ingest")

# What each parser error means to a client, most specific class first; the parser's own
# message is never used: it quotes the bytes it could not read.
_FAULTS: tuple[tuple[type[BaseException], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header is too long"),
    (http_exceptions.BadHttpMethod, "the request method is malformed"),
    (http_exceptions.BadStatusLine, "the request line is malformed"),
    (http_exceptions.InvalidURLError, "the request URL is malformed"),
    (http_exceptions.InvalidHeader, "a header is malformed"),
    (http_exceptions.ContentLengthError, "the body does not match its Content-Length"),
    (http_exceptions.TransferEncodingError, "the body's chunked encoding is malformed"),
    (http_exceptions.PayloadEncodingError, "the body's encoding is malformed"),
    (
        http_exceptions.BadHttpMessage,
        "the request is not valid HTTP (say, a header with a control character or a bare CR or LF)",
    ),
)


class _ProtocolLogger(logging.Logger):
    """The logger aiohttp's request handler is given: its other lines (an unhandled exception,
    debug chatter) go to structlog with the exception's type, without its message or the
    arguments, either of which may quote a request."""

    def handle(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return
        exception = record.exc_info[1] if record.exc_info else None
        log.error("aiohttp_error", what=str(record.msg), exc_type=type(exception).__name__ if exception else None)


PROTOCOL_LOGGER = _ProtocolLogger("tlytics.http")


def fault_of(exc: BaseException | None) -> str:
    """What is wrong with a request aiohttp refused, in words fit for the client."""
    for kind, fault in _FAULTS:
        if isinstance(exc, kind):
            return fault
    return "the request is not valid HTTP"


def _json_refusal(request: web.BaseRequest, status: int, exc: BaseException | None) -> web.Response:
    if status >= 500:
        message = "internal error; the request was not accepted"
        log.error("request_failed_in_http_layer", status=status, exc_type=type(exc).__name__ if exc else None)
    else:
        message = f"{fault_of(exc)}; nothing of it was read"
        log.warning(
            "http_request_refused",
            status=status,
            fault=fault_of(exc),
            exc_type=type(exc).__name__ if exc else None,
            remote=request.remote,
        )
    response = web.Response(
        status=status, body=orjson.dumps({"error": message, "status": status}), content_type="application/json"
    )
    response.force_close()
    return response


_original_handle_error = web_protocol.RequestHandler.handle_error


def _handle_error(
    self: web_protocol.RequestHandler,
    request: web.BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    if self.logger is not PROTOCOL_LOGGER:
        return _original_handle_error(self, request, status, exc, message)
    if request.writer.output_size > 0:
        # Some of an answer went out already: the connection is broken (as aiohttp does).
        raise ConnectionError("Response is sent already, cannot send another response with the error message")
    return _json_refusal(request, status, exc)


def install() -> None:
    """Wrap aiohttp's `handle_error` (once per process; idempotent)."""
    if web_protocol.RequestHandler.handle_error is not _handle_error:
        web_protocol.RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]
