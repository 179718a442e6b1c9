"""Request recording for ASGI applications (FastAPI, Starlette, any ASGI app)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from tlytics.client.client import Client
from tlytics.client.middleware.client_ip import RecordIP
from tlytics.client.middleware.recording import HTTP_REQUEST_KEY, RequestRecorder, RequestSeen

log = logging.getLogger("tlytics.client.middleware")

Scope = MutableMapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _route_template(scope: Scope) -> str | None:
    """The template of the route Starlette's router matched (it sets scope["route"] on the
    scope it was handed, the one this middleware holds); None when none did."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


class ASGIMiddleware:
    """ASGI middleware: `app.add_middleware(ASGIMiddleware, client=client)` in FastAPI/Starlette,
    or `ASGIMiddleware(app, client)` around any ASGI app. Options as `aiohttp_middleware`'s."""

    def __init__(
        self,
        app: ASGIApp,
        client: Client,
        *,
        key: str = HTTP_REQUEST_KEY,
        trust_forwarded: bool = False,
        record_ip: RecordIP = "truncated",
        skip_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.recorder = RequestRecorder(
            client, key=key, trust_forwarded=trust_forwarded, record_ip=record_ip, skip_paths=skip_paths
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or self.recorder.skips(str(scope.get("path", ""))):
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
            self.recorder.record(lambda: _seen(scope, state, started))


def _seen(scope: Scope, state: dict[str, int], started: float) -> RequestSeen:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    peer = scope.get("client")
    return RequestSeen(
        method=str(scope.get("method", "")),
        route=_route_template(scope),
        path=str(scope.get("path", "")),
        status_code=state["status"],
        started=started,
        peer=str(peer[0]) if peer else None,
        forwarded_for=headers.get("x-forwarded-for"),
        user_agent=headers.get("user-agent"),
        response_size=state["size"],
    )
