"""Tlytics: a self-hosted analytics event pipeline where an acknowledged event is never lost
and never stored twice.

The client's names are handed on lazily (PEP 562): `import tlytics` loads only the errors,
so the server (which imports `tlytics.ingest`) does not load the client, nor a host
application that only catches `tlytics.TlyticsError` the client's threads and middleware.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tlytics.errors import (
    ClientClosed,
    DeliveryError,
    EventsDropped,
    InvalidEvent,
    SpoolError,
    SpoolFull,
    StoreError,
    StoreUnavailable,
    TlyticsError,
)

if TYPE_CHECKING:
    from tlytics.client import BeforeSendFailed, Client, Config, Event, EventsRejected

__version__ = "0.1.0"

__all__ = [
    "BeforeSendFailed",
    "Client",
    "ClientClosed",
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

_CLIENT_NAMES = frozenset({"BeforeSendFailed", "Client", "Config", "Event", "EventsRejected"})


def __getattr__(name: str) -> Any:
    if name not in _CLIENT_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("tlytics.client"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
