"""The durable on-disk spool shared by the server and the client, and the format of the
server's spool entries.

The entry format (entry.py) is handed on lazily (PEP 562): it needs msgspec and the store,
which the client, importing the spool, neither needs nor installs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tlytics.spool.group_commit import GroupCommitter
from tlytics.spool.spool import Spool, SpoolSync

if TYPE_CHECKING:
    from tlytics.spool.entry import (
        EVENT_OVERHEAD_BYTES,
        SpoolRow,
        decode_spool_entry,
        encode_spool_entry,
        event_size_bytes,
        store_rows,
    )

__all__ = [
    "EVENT_OVERHEAD_BYTES",
    "GroupCommitter",
    "Spool",
    "SpoolRow",
    "SpoolSync",
    "decode_spool_entry",
    "encode_spool_entry",
    "event_size_bytes",
    "store_rows",
]

_ENTRY_NAMES = frozenset(
    {"EVENT_OVERHEAD_BYTES", "SpoolRow", "decode_spool_entry", "encode_spool_entry", "event_size_bytes", "store_rows"}
)


def __getattr__(name: str) -> Any:
    if name not in _ENTRY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("tlytics.spool.entry"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
