"""Celery: deliver what a worker process emitted before it goes away.

Celery's prefork pool ends its child processes with `os._exit()`, which skips `atexit`, so
the client's bounded flush at exit never runs there and events emitted in the last
`spool_interval` would stay in memory. `install(client)` connects the client's `close()` to
`worker_process_shutdown` (sent in each child just before it exits) and to `worker_shutdown`
(the main process of the solo and threads pools); what is not delivered in time stays on
disk for the next process on the same spool_dir.

Celery is not a dependency of Tlytics: it is imported only when `install` is called without
a `signals` object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from tlytics.client.client import Client
from tlytics.client.config import seconds

log = logging.getLogger("tlytics.client")


class _Signal(Protocol):
    def connect(self, receiver: Callable[..., Any], *, weak: bool = ...) -> Any: ...


def install(client: Client, *, timeout: float | None = None, signals: Any = None) -> Callable[..., None]:
    """Close `client` when a Celery worker process shuts down; returns the receiver.

    `timeout` bounds the flush (default: the client's `flush_at_exit`, or 1 s when that is
    0). `signals` is `celery.signals` (the default), or any object with the same
    `worker_process_shutdown` and `worker_shutdown` signals, for tests.
    """
    if signals is None:
        from celery import signals as celery_signals  # type: ignore[import-not-found,unused-ignore]

        signals = celery_signals
    bound_s = timeout if timeout is not None else (seconds(client.config.flush_at_exit) or 1.0)

    def close_client(**_: Any) -> None:
        try:
            delivered = client.close(bound_s)
        except Exception:  # a signal receiver must not break the worker's shutdown
            log.exception("client_close_on_celery_shutdown_failed")
            return
        if not delivered:
            log.warning("celery worker shutting down: %d events left in the spool for the next run", client.pending())

    # weak=False: the receiver is a closure nothing else references.
    worker_process_shutdown: _Signal = signals.worker_process_shutdown
    worker_shutdown: _Signal = signals.worker_shutdown
    worker_process_shutdown.connect(close_client, weak=False)
    worker_shutdown.connect(close_client, weak=False)
    return close_client
