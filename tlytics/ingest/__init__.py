"""The ingest server: the aiohttp app and its handlers, in front of the spool and the writer.

Names are handed on lazily (PEP 562): importing `tlytics.ingest.settings` (as the writer
process and `python -m tlytics.healthcheck` do) must not load the HTTP app and aiohttp.web.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tlytics.ingest.app import create_app
    from tlytics.ingest.settings import Settings

__all__ = ["Settings", "create_app"]

# Each public name, and the module that owns it.
_OWNERS = {"Settings": "tlytics.ingest.settings", "create_app": "tlytics.ingest.app"}


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(owner), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
