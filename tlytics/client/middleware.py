"""Record one `http_request` event per request for aiohttp, ASGI (FastAPI, Starlette) and WSGI
(Flask, Django) applications, and `track_event` to tag one route or function.

Each event's data: method, path, status_code, duration_ms, client_ip, user_agent,
response_size. Recording never changes or breaks the application's response: any error in
it is logged and swallowed. No framework is imported unless its middleware is used.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tlytics.client.client import Client

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tlytics.client.middleware")

HTTP_REQUEST_KEY = "http_request"

F = TypeVar("F", bound=Callable[..., Any])


def _record(
    client: Client,
    key: str,
    *,
    method: str,
    path: str,
    status_code: int,
    started: float,
    client_ip: str | None,
    user_agent: str | None,
    response_size: int | None,
) -> None:
    try:
        client.emit(
            key,
            {
                "method": method,
                "path": path,
                "status_code": status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "client_ip": client_ip,
                "user_agent": user_agent,
                "response_size": response_size,
            },
        )
    except Exception:
        log.exception("tlytics_middleware_record_failed path=%s", path)


def _first_forwarded(value: str | None) -> str | None:
    return value.split(",")[0].strip() or None if value else None


# --- aiohttp -------------------------------------------------------------------------------


def aiohttp_middleware(
    client: Client, *, key: str = HTTP_REQUEST_KEY, trust_forwarded: bool = False
) -> Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware: `web.Application(middlewares=[aiohttp_middleware(client)])`.

    With `trust_forwarded`, client_ip is the first X-Forwarded-For address (behind a proxy
    you run); otherwise the peer address.
    """
    from aiohttp import web

    @web.middleware
    async def tlytics_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        size: int | None = None
        try:
            response = await handler(request)
            status = response.status
            body = getattr(response, "body", None)
            size = (
                response.content_length
                if response.content_length is not None
                else (len(body) if isinstance(body, bytes | bytearray) else None)
            )
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            ip = _first_forwarded(request.headers.get("X-Forwarded-For")) if trust_forwarded else None
            _record(
                client,
                key,
                method=request.method,
                path=request.path,
                status_code=status,
                started=started,
                client_ip=ip or request.remote,
                user_agent=request.headers.get("User-Agent"),
                response_size=size,
            )

    return tlytics_middleware


# --- ASGI ----------------------------------------------------------------------------------

Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIMiddleware:
    """ASGI middleware: `app.add_middleware(ASGIMiddleware, client=client)` in FastAPI/Starlette,
    or `ASGIMiddleware(app, client)` around any ASGI app."""

    def __init__(
        self, app: ASGIApp, client: Client, *, key: str = HTTP_REQUEST_KEY, trust_forwarded: bool = False
    ) -> None:
        self.app = app
        self.client = client
        self.key = key
        self.trust_forwarded = trust_forwarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 500, "size": 0}

        async def counting_send(message: Message) -> None:
            try:
                if message["type"] == "http.response.start":
                    state["status"] = int(message["status"])
                elif message["type"] == "http.response.body":
                    state["size"] += len(message.get("body", b""))
            except Exception:
                log.exception("tlytics_middleware_observe_failed")
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            peer = scope.get("client")
            ip = _first_forwarded(headers.get("x-forwarded-for")) if self.trust_forwarded else None
            _record(
                self.client,
                self.key,
                method=str(scope.get("method", "")),
                path=str(scope.get("path", "")),
                status_code=state["status"],
                started=started,
                client_ip=ip or (peer[0] if peer else None),
                user_agent=headers.get("user-agent"),
                response_size=state["size"],
            )


# --- WSGI ----------------------------------------------------------------------------------

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WSGIMiddleware:
    """WSGI middleware: `app.wsgi_app = WSGIMiddleware(app.wsgi_app, client)` in Flask, or
    `application = WSGIMiddleware(get_wsgi_application(), client)` in Django's wsgi.py.
    The event is recorded when the server closes the response, so the size is the real one."""

    def __init__(
        self, app: WSGIApp, client: Client, *, key: str = HTTP_REQUEST_KEY, trust_forwarded: bool = False
    ) -> None:
        self.app = app
        self.client = client
        self.key = key
        self.trust_forwarded = trust_forwarded

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "size": 0, "recorded": False}

        def observing_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                state["status"] = int(status.split(" ", 1)[0])
            except ValueError:
                pass
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        def record() -> None:
            if state["recorded"]:
                return
            state["recorded"] = True
            ip = _first_forwarded(environ.get("HTTP_X_FORWARDED_FOR")) if self.trust_forwarded else None
            _record(
                self.client,
                self.key,
                method=str(environ.get("REQUEST_METHOD", "")),
                path=str(environ.get("PATH_INFO", "")),
                status_code=state["status"],
                started=started,
                client_ip=ip or environ.get("REMOTE_ADDR"),
                user_agent=environ.get("HTTP_USER_AGENT"),
                response_size=state["size"],
            )

        try:
            body = self.app(environ, observing_start_response)
        except BaseException:
            record()
            raise
        return _ObservedBody(body, state, record)


class _ObservedBody:
    """Passes the application's body through, counting bytes; records on close()."""

    def __init__(self, body: Iterable[bytes], state: dict[str, Any], record: Callable[[], None]) -> None:
        self._body = body
        self._state = state
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._state["size"] += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._record()


# --- one route -----------------------------------------------------------------------------


def track_event(client: Client, key: str, data: Mapping[str, Any] | None = None) -> Callable[[F], F]:
    """Decorator emitting `key` (with `data`) each time the function or aiohttp handler is
    called, before it runs, so a call that fails is counted too."""

    def emit() -> None:
        try:
            client.emit(key, data)
        except Exception:
            log.exception("tlytics_track_event_failed key=%s", key)

    def decorate(function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                emit()
                return await function(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            emit()
            return function(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
