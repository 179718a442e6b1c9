"""The durable on-disk spool shared by the server and the client.

GroupCommitter (the server's, built on asyncio) is handed on lazily (PEP 562), so the client,
which imports the spool, does not load asyncio.
"""

from typing import TYPE_CHECKING, Any

from tlytics.spool.spool import Spool, SpoolSync

if TYPE_CHECKING:
    from tlytics.spool.group_commit import GroupCommitter


def __getattr__(name: str) -> Any:
    if name == "GroupCommitter":
        from tlytics.spool.group_commit import GroupCommitter

        return GroupCommitter
    raise AttributeError(f"module 'tlytics.spool' has no attribute {name!r}")


__all__ = ["GroupCommitter", "Spool", "SpoolSync"]
