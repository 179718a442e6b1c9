"""What `/health` and `/metrics` learn without waiting behind reads: the spool's figures and
whether the store answers, each asked on a thread of its own (never the reading threads, which
slow queries can fill), one question at a time, for a bounded wait.

The store is asked through a reader of its own (its own connection, a short budget): it counts
the stored events, which the store keeps in a counter. How long it has not answered decides
whether the server is still healthy: at once unhealthy while it has not answered since the
server started (a wrong password, a missing database, a closed port), else after
`--store-unhealthy-after` (a restart of PostgreSQL is no reason to leave a load balancer's
rotation; a store gone for good is).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from tlytics.errors import SpoolError, StoreError
from tlytics.ingest.state import BACKEND, QUARANTINE, SETTINGS, SPOOL
from tlytics.spool import Spool
from tlytics.store.budget import read_budget
from tlytics.store.on_demand import ReaderOnDemand

T = TypeVar("T")

# A count of a counter row: instant on a store that is well. Over this, it is "not answering".
PROBE_BUDGET_S = 2.0
# How long /health waits for the store's answer; a little over the budget, which the store
# enforces itself. A probe still running then (PostgreSQL's connect timeout is longer) goes on,
# and the next /health joins it rather than queueing another.
PROBE_WAIT_S = 2.5
# The spool's figures are a few reads of its own SQLite file: quick, unless the disk is not.
SPOOL_FIGURES_WAIT_S = 2.5


@dataclass(frozen=True, slots=True)
class SpoolFigures:
    """The spool's and the quarantine's figures, read together; `counted_at` is when the
    entries had been counted (monotonic)."""

    entries: int
    counted_at: float
    size_bytes: int
    oldest_age_s: float
    disk_free_bytes: int
    quarantined_entries: int
    quarantine_bytes: int

    @classmethod
    def read(cls, spool: Spool, quarantine: Spool) -> SpoolFigures:
        """SpoolError or OSError when they cannot be read."""
        entries = spool.count()
        return cls(
            entries=entries,
            counted_at=time.monotonic(),
            size_bytes=spool.size_bytes(),
            oldest_age_s=spool.oldest_age_s(),
            disk_free_bytes=spool.disk_free_bytes(),
            quarantined_entries=quarantine.count(),
            quarantine_bytes=quarantine.size_bytes(),
        )


class OneAtATime(Generic[T]):
    """`fn()` on a thread of its own, one call at a time: a caller that arrives while a call
    runs waits for that call's result instead of queueing another, so a hung store cannot pile
    up work, and no caller waits longer than it asks."""

    def __init__(self, fn: Callable[[], T], *, thread_name: str) -> None:
        self._fn = fn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._running: asyncio.Future[tuple[float, T]] | None = None
        # When the running call began on its thread (monotonic); empty while it waits its turn.
        self._began: list[float] = []

    async def result(self, *, wait_s: float) -> T:
        """The result of a call started now (or of the one running); TimeoutError after `wait_s`."""
        return (await self.answer(wait_s=wait_s))[1]

    async def answer(self, *, wait_s: float, asked_after: float | None = None) -> tuple[float, T]:
        """When the call answering began, and its result: the running call's, unless it began
        at or before `asked_after` (then a new call, queued behind it, so one answering began
        after that moment; a call still waiting its turn begins later and is joined: at most
        one waits); TimeoutError after `wait_s`."""
        running = self._running
        began = self._began
        if running is None or running.done() or (asked_after is not None and began and began[0] <= asked_after):
            self._began = began = []
            self._running = running = asyncio.get_running_loop().run_in_executor(self._executor, self._timed, began)
            running.add_done_callback(_seen)
        return await asyncio.wait_for(asyncio.shield(running), timeout=wait_s)

    def _timed(self, began: list[float]) -> tuple[float, T]:
        """On the thread: `fn()`, with when it began (what it read was there by then)."""
        began.append(time.monotonic())
        return began[0], self._fn()

    def close(self) -> None:
        """Wait for a call still running (bounded: the store's budget and connect timeout)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _seen(future: asyncio.Future[Any]) -> None:
    """Take a call's exception as seen: its waiters may all have given up (no warning at exit)."""
    if not future.cancelled():
        future.exception()


class StoreHealth:
    """Whether the store answers, since when it does not, and its last answer (stored events)."""

    def __init__(self, reader: ReaderOnDemand, *, unhealthy_after_s: float) -> None:
        self._reader = reader
        self._unhealthy_after_s = unhealthy_after_s
        self._probe: OneAtATime[int] = OneAtATime(self._count, thread_name="health-store")
        # Monotonic times: the last answer (None: none since start), the first failure since.
        self.answered_at: float | None = None
        self.failing_since: float | None = None
        # Why the last question failed (None when it was answered), and the last answer.
        self.error: str | None = None
        self.stored_events: int | None = None

    def _count(self) -> int:
        with read_budget(PROBE_BUDGET_S):
            return self._reader.run(self._reader.queries.count)

    async def check(self, *, asked_after: float | None = None) -> None:
        """Ask the store now (or join the question already asked, if it was asked after
        `asked_after`), for at most PROBE_WAIT_S."""
        try:
            _, self.stored_events = await self._probe.answer(wait_s=PROBE_WAIT_S, asked_after=asked_after)
        except TimeoutError:
            self._failed(f"the store did not answer within {PROBE_WAIT_S:g} s")
        except StoreError as exc:
            self._failed(str(exc))
        else:
            self.answered_at = time.monotonic()
            self.failing_since = None
            self.error = None

    def _failed(self, error: str) -> None:
        # The error is this question's: an earlier one's cause never stands in for it.
        self.error = error
        self.stored_events = None
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    @property
    def unhealthy(self) -> bool:
        """Whether the store's silence takes the server out of rotation: it has not answered
        since start, or not for `unhealthy_after_s`."""
        if self.failing_since is None:
            return False
        if self.answered_at is None:
            return True
        return time.monotonic() - self.failing_since >= self._unhealthy_after_s

    @property
    def failing_for_s(self) -> float | None:
        return None if self.failing_since is None else time.monotonic() - self.failing_since

    def close(self) -> None:
        self._probe.close()
        self._reader.close()


# What /health and /metrics read, each on a thread of its own, never behind the reading threads.
STORE_HEALTH = web.AppKey("store_health", StoreHealth)
SPOOL_FIGURES: web.AppKey[OneAtATime[SpoolFigures]] = web.AppKey("spool_figures")


async def health_watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context, after the spool's and the store's: the store's health (with a reader
    of its own) and the spool's figures, each on a thread of its own."""
    settings = app[SETTINGS]
    spool, quarantine = app[SPOOL], app[QUARANTINE]
    # A reader of its own (its own connection): /health asks whether the store answers without
    # waiting behind the handlers' reads; opened on first use.
    reader = app[BACKEND].reader(statement_timeout_s=PROBE_BUDGET_S)
    health = StoreHealth(reader, unhealthy_after_s=settings.store_unhealthy_after_s)
    figures = OneAtATime(lambda: SpoolFigures.read(spool, quarantine), thread_name="health-spool")
    app[STORE_HEALTH] = health
    app[SPOOL_FIGURES] = figures
    yield
    await asyncio.to_thread(figures.close)
    await asyncio.to_thread(health.close)


async def read_figures(store: StoreHealth, spool_figures_call: OneAtATime[SpoolFigures]) -> SpoolFigures | Exception:
    """The spool's figures (or why they could not be read), then the store asked.

    An empty spool must mean that `store.stored_events` counts every acknowledged event: the
    writer removes an entry only after the store committed it, so a count begun after the
    spool was found empty has them all, and the store is asked only then (never a count begun
    earlier, such as an earlier /health's still running). Nor may the spool's figures be those
    of a reading begun before this /health: they could miss an event acknowledged since, and
    call the spool empty. One after the other, each bounded: the spool's count takes a few
    milliseconds, and an unreadable spool is a 503 whatever the store says, so the store is
    not asked then.
    """
    figures = await spool_figures(spool_figures_call, asked_after=time.monotonic())
    if isinstance(figures, SpoolFigures):
        await store.check(asked_after=figures.counted_at)
    return figures


async def spool_figures(
    call: OneAtATime[SpoolFigures], *, asked_after: float | None = None
) -> SpoolFigures | Exception:
    """The spool's figures (read after `asked_after` if given), or why they could not be read
    within SPOOL_FIGURES_WAIT_S."""
    try:
        return (await call.answer(wait_s=SPOOL_FIGURES_WAIT_S, asked_after=asked_after))[1]
    except (SpoolError, OSError, TimeoutError) as exc:
        return exc
