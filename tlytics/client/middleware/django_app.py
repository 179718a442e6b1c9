"""Request recording for Django: `"tlytics.client.DjangoMiddleware"` in MIDDLEWARE, configured
by the `TLYTICS` setting (Django builds middleware itself, from a dotted path, so its options
cannot be passed as arguments):

    TLYTICS = {
        "client": "myproject.analytics.client",  # a Client, or the dotted path of one
        "record_ip": "truncated",                # or "full", "none"
        "trust_forwarded": False,
        "key": "http_request",
        "skip_paths": ["/health"],               # exact paths, or prefixes ending with "*"
    }

Works under WSGI and ASGI Django alike (sync and async capable). A streamed response
(StreamingHttpResponse, FileResponse) is recorded when Django closes it, once its body is
sent: its duration_ms includes the body, and its response_size is the bytes sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from tlytics.client.client import Client
from tlytics.client.middleware.recording import HTTP_REQUEST_KEY, RequestRecorder, RequestSeen

log = logging.getLogger("tlytics.client.middleware")

SETTING_NAME = "TLYTICS"
_OPTION_NAMES = frozenset({"client", "record_ip", "trust_forwarded", "key", "skip_paths"})


def _configured_recorder() -> RequestRecorder:
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
    from django.utils.module_loading import import_string  # type: ignore[import-untyped]

    options: Mapping[str, Any] = getattr(settings, SETTING_NAME, None) or {}
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise ImproperlyConfigured(f"settings.{SETTING_NAME}: unknown option(s) {', '.join(unknown)}")
    client = options.get("client")
    if isinstance(client, str):
        client = import_string(client)
    if not isinstance(client, Client):
        raise ImproperlyConfigured(
            f'settings.{SETTING_NAME}["client"] must be a tlytics Client or the dotted path of one, not {client!r}'
        )
    try:
        return RequestRecorder(
            client,
            key=str(options.get("key", HTTP_REQUEST_KEY)),
            trust_forwarded=bool(options.get("trust_forwarded", False)),
            record_ip=str(options.get("record_ip", "truncated")),
            skip_paths=options.get("skip_paths", ()),
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"settings.{SETTING_NAME}: {exc}") from exc


def _route_template(request: Any) -> str | None:
    """The URL pattern Django resolved, e.g. /users/<int:user_id>/ (with a leading slash like
    the other frameworks' templates); None when nothing resolved (a 404)."""
    route = getattr(getattr(request, "resolver_match", None), "route", None)
    if not isinstance(route, str):
        return None
    return route if route.startswith("/") else "/" + route


class DjangoMiddleware:
    """Records one `http_request` event per request; see the module docstring for settings."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.get_response = get_response
        self.recorder = _configured_recorder()
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            # Tells Django this instance answers with a coroutine, so an async stack keeps
            # it on the event loop instead of running it in a thread.
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._is_async:
            return self._call_async(request)
        if self.recorder.skips(request.path):
            return self.get_response(request)
        started = time.perf_counter()
        response = None
        try:
            response = self.get_response(request)
            return response
        finally:
            self._record_when_sent(request, response, started)

    async def _call_async(self, request: Any) -> Any:
        if self.recorder.skips(request.path):
            return await self.get_response(request)
        started = time.perf_counter()
        response = None
        try:
            response = await self.get_response(request)
            return response
        finally:
            self._record_when_sent(request, response, started)

    def _record_when_sent(self, request: Any, response: Any, started: float) -> None:
        """Record now; a streamed body (StreamingHttpResponse) once the server has sent it and
        closed the response, so that duration_ms and response_size cover the body."""
        closers = getattr(response, "_resource_closers", None)
        streamed = response is not None and getattr(response, "streaming", False)
        if not streamed or not isinstance(closers, list):
            self.recorder.record(lambda: _seen(request, response, started, None))
            return
        sent = _SentBytes()
        try:
            if getattr(response, "file_to_stream", None) is None:  # a FileResponse has its size
                response.streaming_content = _counted(response, sent)
        except Exception:  # recording never breaks the response
            log.exception("tlytics_middleware_observe_failed")
        # Django runs these in response.close(), which the server calls once the body is sent
        # (WSGI: the iterable's close(); ASGI: after the last chunk).
        closers.append(lambda: self.recorder.record(lambda: _seen(request, response, started, sent)))


class _SentBytes:
    """Bytes of a streamed body sent so far."""

    def __init__(self) -> None:
        self.count = 0


def _counted(response: Any, sent: _SentBytes) -> Any:
    """The response's streamed body, counting its bytes into `sent` as they go out."""
    chunks = response.streaming_content
    if getattr(response, "is_async", False):

        async def counted_async() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                sent.count += len(chunk)
                yield chunk

        return counted_async()

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            sent.count += len(chunk)
            yield chunk

    return counted()


def _seen(request: Any, response: Any, started: float, sent: _SentBytes | None) -> RequestSeen:
    meta = request.META
    return RequestSeen(
        method=str(request.method),
        route=_route_template(request),
        path=str(request.path),
        # Django turns a view's exception into a 500 response before it gets here; None only
        # if an exception still escapes (DEBUG_PROPAGATE_EXCEPTIONS).
        status_code=int(response.status_code) if response is not None else 500,
        started=started,
        peer=meta.get("REMOTE_ADDR"),
        forwarded_for=meta.get("HTTP_X_FORWARDED_FOR"),
        user_agent=meta.get("HTTP_USER_AGENT"),
        response_size=_size(response, sent),
    )


def _size(response: Any, sent: _SentBytes | None) -> int | None:
    if response is None:
        return None
    if not getattr(response, "streaming", False):
        return len(response.content)
    length = response.get("Content-Length") if hasattr(response, "get") else None
    if length is not None and str(length).isdigit():
        return int(length)  # a FileResponse: its file's size
    return sent.count if sent is not None else None
