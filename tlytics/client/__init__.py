"""The Tlytics client library: Client, Config, Event, and framework middleware."""

from tlytics.client.client import Client
from tlytics.client.config import Config, Event
from tlytics.client.middleware import ASGIMiddleware, WSGIMiddleware, aiohttp_middleware, track_event
from tlytics.errors import EventsRejected

__all__ = [
    "ASGIMiddleware",
    "Client",
    "Config",
    "Event",
    "EventsRejected",
    "WSGIMiddleware",
    "aiohttp_middleware",
    "track_event",
]
