"""Where writer functions run, off the event loop: `await executor.execute(fn, *args)` calls
`fn(resources, *args)` with the writer's resources and returns its result (or raises its error).

Like datasette's `execute_write_fn`, the executor is generic: a new kind of write is a new
plain function, not a new method. `ThreadExecutor` runs them on one dedicated thread of this
process; `ProcessExecutor` (tlytics.writer.process) in a writer process of its own.
Either way one place holds the store's only write connection, and a failing call leaves the
executor ready for the next one.
"""

from __future__ import annotations

import asyncio
import functools
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar, TypeVarTuple

from tlytics.writer.resources import WriterResources

T = TypeVar("T")
Args = TypeVarTuple("Args")


class WriteExecutor(Protocol):
    """Runs writer functions one at a time, with the writer's resources."""

    async def execute(self, fn: Callable[[WriterResources, *Args], T], *args: *Args) -> T:
        """Run `fn(resources, *args)` and return what it returns."""
        ...

    async def close(self) -> None:
        """Wait for the call in hand, then release the resources."""
        ...


class ThreadExecutor:
    """WriteScheduler functions on one dedicated thread of this process."""

    def __init__(self, resources: WriterResources) -> None:
        self._resources = resources
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")

    async def execute(self, fn: Callable[[WriterResources, *Args], T], *args: *Args) -> T:
        call = functools.partial(fn, self._resources, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        # On the writer's thread: the write connection is closed after the last call in hand.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._resources.close_store)
        self._executor.shutdown(wait=True)


def round_trips(exc: BaseException) -> bool:
    """Whether `exc` comes out of pickling whole, as an executor in another process hands it
    back (one whose class needs keyword arguments does not)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True
