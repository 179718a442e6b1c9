"""The durable on-disk spool shared by the server and the client, and the format of the
server's spool entries.

Handed on lazily (PEP 562): the entry format (entry.py) needs msgspec and the store, and
GroupCommitter (the server's) is built on asyncio; the client, importing the spool, needs
neither, and installs no msgspec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    from tlytics.spool.group_commit import GroupCommitter

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

# Each lazily handed-on name, with the module that defines it.
_LAZY = {
    **dict.fromkeys(
        (
            "EVENT_OVERHEAD_BYTES",
            "SpoolRow",
            "decode_spool_entry",
            "encode_spool_entry",
            "event_size_bytes",
            "store_rows",
        ),
        "tlytics.spool.entry",
    ),
    "GroupCommitter": "tlytics.spool.group_commit",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
