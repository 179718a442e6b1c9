"""Tlytics: a self-hosted analytics event pipeline where an acknowledged event is never lost
and never stored twice."""

from tlytics.client import BeforeSendFailed, Client, Config, Event, EventsRejected
from tlytics.errors import (
    DeliveryError,
    EventsDropped,
    InvalidEvent,
    SpoolError,
    SpoolFull,
    StoreError,
    StoreUnavailable,
    TlyticsError,
)

__version__ = "0.1.0"

__all__ = [
    "BeforeSendFailed",
    "Client",
    "Config",
    "DeliveryError",
    "Event",
    "EventsDropped",
    "EventsRejected",
    "InvalidEvent",
    "SpoolError",
    "SpoolFull",
    "StoreError",
    "StoreUnavailable",
    "TlyticsError",
    "__version__",
]
