"""One ingest worker of a `--workers N` server: the usual application (create_app) in a process
of its own, on the server's port beside the other workers (SO_REUSEPORT: the kernel spreads
new connections over them), appending to a spool of its own (`<spool>/worker-<index>`) and
running its writer functions on the supervisor's one writer (tlytics.writer.channel).

It stops, with the usual clean shutdown (requests in flight answered, its spool's group
commits done, a final drain), on SIGTERM from the supervisor, and when the supervisor is gone
(its channel closes; on Linux the kernel also kills it then, see die_with_parent). Ctrl-C
signals the whole process group: the worker ignores SIGINT and lets the supervisor stop it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import MutableMapping
from contextlib import suppress
from typing import Any

import structlog
from aiohttp import web

from tlytics.ingest.app import create_app
from tlytics.ingest.event_loop import new_event_loop
from tlytics.ingest.settings import Settings
from tlytics.ingest.state import WorkerRole
from tlytics.writer.channel import ChannelExecutor
from tlytics.writer.process import STOP_SIGNALS, die_with_parent

log = structlog.get_logger("tlytics.ingest")

# As long as a single server's (cli.main): requests in flight may finish meanwhile.
SHUTDOWN_TIMEOUT_S = 30.0


def run_worker(settings: Settings, index: int, channel: socket.socket, parent_pid: int) -> None:
    """The worker process's main function (spawned by the supervisor, its stop signals blocked)."""
    from tlytics.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    configure_logging(settings.log_level)
    _name_worker_in_logs(index)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(settings, index, channel))
    finally:
        loop.close()


def _name_worker_in_logs(index: int) -> None:
    """Every log line of this process says `"worker": index` (which one answered a request)."""

    def add_worker(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("worker", index)
        return event

    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[add_worker, *processors])


async def _serve(settings: Settings, index: int, channel: socket.socket) -> None:
    writer = ChannelExecutor(channel)
    await writer.connect()
    runner = web.AppRunner(create_app(settings, worker=WorkerRole(index, writer)), access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Now that SIGTERM has its handler: let the blocked signals in (one sent meanwhile is handled).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await site.start()
        log.info("worker_listening", pid=os.getpid(), port=settings.port)
        await writer.tell_listening(settings.port)
        supervisor_gone = asyncio.create_task(writer.closed.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({supervisor_gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (supervisor_gone, stopping):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        if writer.closed.is_set():
            log.warning("worker_supervisor_gone")
    finally:
        await runner.cleanup()
    log.info("worker_stopped")
