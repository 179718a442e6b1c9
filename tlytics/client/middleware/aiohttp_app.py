"""Request recording for aiohttp applications."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from tlytics.client.client import Client
from tlytics.client.middleware.client_ip import RecordIP
from tlytics.client.middleware.recording import HTTP_REQUEST_KEY, RequestRecorder, RequestSeen

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.typedefs import Middleware

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def _route_template(request: web.Request) -> str | None:
    """The matched resource's template (/users/{id}); None when nothing matched (a 404)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def aiohttp_middleware(
    client: Client,
    *,
    key: str = HTTP_REQUEST_KEY,
    trust_forwarded: bool = False,
    record_ip: RecordIP = "truncated",
    skip_paths: Iterable[str] = (),
) -> Middleware:
    """An aiohttp middleware: `web.Application(middlewares=[aiohttp_middleware(client)])`.

    With `trust_forwarded`, client_ip is the first X-Forwarded-For address (behind a proxy
    you run); otherwise the peer address. `record_ip`: "truncated" (default), "full", "none".
    `skip_paths`: paths not recorded, exact ("/health") or prefixes ending with "*".
    """
    from aiohttp import web

    recorder = RequestRecorder(
        client, key=key, trust_forwarded=trust_forwarded, record_ip=record_ip, skip_paths=skip_paths
    )

    @web.middleware
    async def tlytics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if recorder.skips(request.path):
            return await handler(request)
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
            recorder.record(
                lambda: RequestSeen(
                    method=request.method,
                    route=_route_template(request),
                    path=request.path,
                    status_code=status,
                    started=started,
                    peer=request.remote,
                    forwarded_for=request.headers.get("X-Forwarded-For"),
                    user_agent=request.headers.get("User-Agent"),
                    response_size=size,
                )
            )

    return tlytics_middleware
