"""The writer: drains the spool into the store, one store transaction per batch, and runs
retention and erasure, all on the store's single write connection.

`WriteScheduler` (scheduler.py) decides when; a `WriteExecutor` (executor.py: a thread, or process.py:
a process of its own) runs plain writer functions `fn(resources, *args)` (drain.py,
retention.py, erasure.py) with the store's write side, the spool and the quarantine. The
writer drains every spool under the server's spool directory (spools.py: the ingest workers'
of `--workers N` too); a worker's writer calls reach the one writer through channel.py.
"""

from tlytics.writer.drain import DrainResult, drain_batch
from tlytics.writer.erasure import ErasureIncomplete
from tlytics.writer.executor import ThreadExecutor, WriteExecutor
from tlytics.writer.process import ProcessExecutor
from tlytics.writer.resources import WriterResources
from tlytics.writer.scheduler import WriteScheduler

__all__ = [
    "DrainResult",
    "ErasureIncomplete",
    "ProcessExecutor",
    "ThreadExecutor",
    "WriteExecutor",
    "WriteScheduler",
    "WriterResources",
    "drain_batch",
]
