"""The Tlytics client library: Client, Config, Event, and framework middleware.

A library logs through the standard `logging` module and leaves the output to the host
application: the `tlytics.client` logger has a NullHandler, so nothing is printed unless the
application configures logging (structlog is the server's, an application of its own).
"""

import logging

from tlytics.client.client import Client
from tlytics.client.config import Config, Event
from tlytics.client.hooks import BeforeSendFailed
from tlytics.client.middleware import ASGIMiddleware, DjangoMiddleware, WSGIMiddleware, aiohttp_middleware, track_event
from tlytics.errors import EventsRejected

logging.getLogger("tlytics.client").addHandler(logging.NullHandler())

__all__ = [
    "ASGIMiddleware",
    "BeforeSendFailed",
    "Client",
    "Config",
    "DjangoMiddleware",
    "Event",
    "EventsRejected",
    "WSGIMiddleware",
    "aiohttp_middleware",
    "track_event",
]
