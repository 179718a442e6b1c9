"""A process's beginning and end, for every Client in it: after fork() each client rebuilds
its per-process state; at exit each tries to deliver what is pending for up to
`Config.flush_at_exit`, then writes the rest to disk.

A process can end without atexit: `multiprocessing` children started with fork (Process and
Pool workers, and forkserver's) leave through `os._exit()` once their target returns. Before
that, multiprocessing runs its own finalizers, cleared in each new child and then rebuilt by
the after-fork callbacks it runs there: so the exit hook is registered again in every child
through `multiprocessing.util.register_after_fork`. Spawned children exit through
`sys.exit()`, where atexit runs.
"""

from __future__ import annotations

import atexit
import os
import weakref
from multiprocessing import util as multiprocessing_util
from typing import Protocol


class _ProcessBound(Protocol):
    def _after_fork_in_child(self) -> None: ...

    def _at_exit(self) -> None: ...


_clients: weakref.WeakSet[_ProcessBound] = weakref.WeakSet()

# Finalizers of a higher priority run first; multiprocessing's own (queues' feeder threads)
# use 10 and below, and an event emitted just before the child returns is worth as much.
_EXIT_PRIORITY = 20


def register(client: _ProcessBound) -> None:
    _clients.add(client)


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


def _all_at_exit() -> None:
    for client in list(_clients):
        client._at_exit()


class _Anchor:
    """register_after_fork keeps a weak reference to its object: this one lives forever."""


_anchor = _Anchor()


def _register_exit_in_multiprocessing_child(_: object) -> None:
    multiprocessing_util.Finalize(None, _all_at_exit, exitpriority=_EXIT_PRIORITY)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_all_at_exit)
multiprocessing_util.register_after_fork(_anchor, _register_exit_in_multiprocessing_child)
