"""The durable on-disk spool shared by the server and the client."""

from tlytics.spool.group_commit import GroupCommitter
from tlytics.spool.spool import Spool, SpoolSync

__all__ = ["GroupCommitter", "Spool", "SpoolSync"]
