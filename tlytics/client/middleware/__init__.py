"""Request-recording middleware for aiohttp, ASGI (FastAPI, Starlette), WSGI (Flask) and
Django applications, and `track_event` to tag one route or function.

Each middleware records one `http_request` event per request (see `recording` for its
fields). No framework is imported unless its middleware is used.
"""

from tlytics.client.middleware.aiohttp_app import aiohttp_middleware
from tlytics.client.middleware.asgi import ASGIMiddleware
from tlytics.client.middleware.bots import is_bot
from tlytics.client.middleware.client_ip import RecordIP, truncated_ip
from tlytics.client.middleware.django_app import DjangoMiddleware
from tlytics.client.middleware.recording import HTTP_REQUEST_KEY
from tlytics.client.middleware.track import track_event
from tlytics.client.middleware.wsgi import WSGIMiddleware

__all__ = [
    "HTTP_REQUEST_KEY",
    "ASGIMiddleware",
    "DjangoMiddleware",
    "RecordIP",
    "WSGIMiddleware",
    "aiohttp_middleware",
    "is_bot",
    "track_event",
    "truncated_ip",
]
