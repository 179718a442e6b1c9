"""/health and /metrics give the spool figures of the whole server: in an ingest worker of a
`--workers N` server, every worker's spool summed, not this worker's alone; and in any server,
the spools left by an earlier run with more workers while they are drained. So
"spool_entries": 0 still means that everything acknowledged is stored, whichever worker
acknowledged it, and a load balancer asking any worker learns whether the server keeps up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from tlytics.ingest.health_watch import SPOOL_FIGURES, OneAtATime, SpoolFigures
from tlytics.ingest.state import QUARANTINE, SETTINGS, SPOOL
from tlytics.spool import Spool
from tlytics.writer.spools import spool_dirs


def _server_figures(spools: list[Spool], quarantine: Spool) -> SpoolFigures:
    """SpoolError or OSError when they cannot be read."""
    entries = sum(spool.count() for spool in spools)
    return SpoolFigures(
        entries=entries,
        counted_at=time.monotonic(),
        size_bytes=sum(spool.size_bytes() for spool in spools),
        oldest_age_s=max(spool.oldest_age_s() for spool in spools),
        disk_free_bytes=min(spool.disk_free_bytes() for spool in spools),
        quarantined_entries=quarantine.count(),
        quarantine_bytes=quarantine.size_bytes(),
    )


async def server_spool_figures_ctx(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context after health_watch_ctx: its spool figures, for every spool (when there
    is more than this server's own)."""
    settings = app[SETTINGS]
    own = app[SPOOL]
    others = [
        Spool(directory, sync=settings.spool_sync)
        for directory in await asyncio.to_thread(spool_dirs, settings.resolved_spool_dir, settings.workers)
        if directory != own.directory
    ]
    if not others:  # a single process with no spool left by workers: its own figures
        yield
        return
    spools, quarantine = [own, *others], app[QUARANTINE]
    figures = OneAtATime(lambda: _server_figures(spools, quarantine), thread_name="health-spools")
    app[SPOOL_FIGURES] = figures
    yield
    await asyncio.to_thread(figures.close)
