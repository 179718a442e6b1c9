"""The Tlytics client library: Client, Config, Event, and framework middleware.

A library logs through the standard `logging` module and leaves the output to the host
application: the `tlytics.client` logger has a NullHandler, so nothing is printed unless the
application configures logging (structlog is the server's, an application of its own).

The middleware names are handed on lazily (PEP 562): `import tlytics.client` loads neither
a web framework nor asyncio until one of them is asked for.
"""

import logging
from typing import TYPE_CHECKING, Any

from tlytics.client.client import Client
from tlytics.client.config import Config, Event
from tlytics.client.hooks import BeforeSendFailed
from tlytics.errors import ClientClosed, EventsRejected

if TYPE_CHECKING:
    from tlytics.client.middleware import (
        ASGIMiddleware,
        DjangoMiddleware,
        WSGIMiddleware,
        aiohttp_middleware,
        track_event,
    )

logging.getLogger("tlytics.client").addHandler(logging.NullHandler())

_MIDDLEWARE_NAMES = frozenset(
    {"ASGIMiddleware", "DjangoMiddleware", "WSGIMiddleware", "aiohttp_middleware", "track_event"}
)


def __getattr__(name: str) -> Any:
    if name in _MIDDLEWARE_NAMES:
        from tlytics.client import middleware

        return getattr(middleware, name)
    raise AttributeError(f"module 'tlytics.client' has no attribute {name!r}")


__all__ = [
    "ASGIMiddleware",
    "BeforeSendFailed",
    "Client",
    "ClientClosed",
    "Config",
    "DjangoMiddleware",
    "Event",
    "EventsRejected",
    "WSGIMiddleware",
    "aiohttp_middleware",
    "track_event",
]
