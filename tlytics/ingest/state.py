"""Typed application state: the aiohttp AppKeys under which create_app stores its resources."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from tlytics.ingest.keys import Keys
from tlytics.ingest.metrics import Metrics
from tlytics.ingest.rate_limit import RateLimits
from tlytics.ingest.settings import Settings
from tlytics.spool import GroupCommitter, Spool
from tlytics.store import StoreReader
from tlytics.store.backend import Backend
from tlytics.writer import WriteScheduler
from tlytics.writer.channel import ChannelExecutor


@dataclass
class IngestCounters:
    """Since start: what the server acknowledged (a 200 was sent for it)."""

    accepted_requests: int = 0
    accepted_events: int = 0


@dataclass(frozen=True)
class AcceptPath:
    """What an ingest post needs of its app, fetched in one lookup: each `request.app[KEY]`
    costs three Python calls, a share of a 1-event post's own work (issue 22)."""

    settings: Settings
    committer: GroupCommitter
    counters: IngestCounters


@dataclass(frozen=True)
class WorkerRole:
    """What makes an app one of the ingest workers of a `--workers N` server (N > 1): its
    index (its spool is `<spool>/worker-<index>`) and its link to the server's one writer."""

    index: int
    writer: ChannelExecutor


SETTINGS = web.AppKey("settings", Settings)
# Present only in an ingest worker of a `--workers N` server (tlytics.ingest.supervisor).
WORKER = web.AppKey("worker", WorkerRole)
METRICS = web.AppKey("metrics", Metrics)
COUNTERS = web.AppKey("counters", IngestCounters)
SPOOL = web.AppKey("spool", Spool)
QUARANTINE = web.AppKey("quarantine", Spool)
# The store, chosen once from the settings (tlytics.store.backend), and its read side.
BACKEND: web.AppKey[Backend] = web.AppKey("backend")
STORE = web.AppKey("store", StoreReader)
# A few threads for store and spool reads, so a slow read holds neither the event loop nor /health.
READ_EXECUTOR = web.AppKey("read_executor", ThreadPoolExecutor)
WRITE_SCHEDULER = web.AppKey("write_scheduler", WriteScheduler)
COMMITTER = web.AppKey("committer", GroupCommitter)
# The settings, committer and counters again, together (set with the committer).
ACCEPT = web.AppKey("accept", AcceptPath)
# The API keys in force (replaced whole when the keys file is reloaded), and the rate limits.
KEYS = web.AppKey("keys", Keys)
RATE_LIMITS = web.AppKey("rate_limits", RateLimits)
