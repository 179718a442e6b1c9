"""Every read has a time budget (`--read-timeout`) and /health never waits for the reading
threads (issue 19, item 3).

A read over its budget is stopped inside the store (SQLite: a progress handler; PostgreSQL:
statement_timeout), answered 503 + Retry-After naming the budget, and its thread is free again:
the next read works. Reads queued behind busy threads spend their budget waiting too. /health
and /metrics answer meanwhile, even while every reading thread is held by a slow read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import orjson
import psycopg
import pytest
from aiohttp import web

from tests.helpers import app_flush, eventually_async
from tests.postgres_cluster import PostgresCluster
from tlytics.ingest import Settings, create_app
from tlytics.ingest.app import READER_THREADS
from tlytics.store import SQLiteWriter

BUDGET_S = 0.5
# A 503 must come within the budget and this much more: generous, for a busy machine (the point
# is that it comes at all, instead of after the whole query, or never).
MARGIN_S = 8.0
# /health's own bound (its waits are 2.5 s at most); far below a slow read's length.
HEALTH_BOUND_S = 5.0
# Many more reads at once than there are reading threads.
READS_AT_ONCE = READER_THREADS * 2
# A full scan of this many events by a substring of a property: well over BUDGET_S on SQLite.
BIG_STORE_EVENTS = 400_000
EXPENSIVE_QUERY = {"where": "data.text~no-such-text"}


def _write_big_store(path: Path) -> None:
    """BIG_STORE_EVENTS events written straight into the store (much faster than posting them)."""
    writer = SQLiteWriter(path)
    try:
        batch: list[tuple[bytes, str, int, int, str]] = []
        for n in range(BIG_STORE_EVENTS):
            ts = 1_735_689_600_000_000 + n * 1_000_000
            data = orjson.dumps({"text": f"event number {n} of a big store", "n": n}).decode()
            batch.append((uuid.UUID(int=n + 1).bytes, "page_view", ts, ts, data))
            if len(batch) == 50_000:
                writer.insert(batch)
                batch = []
        writer.insert(batch)
    finally:
        writer.close()


@dataclasses.dataclass
class BudgetedServer:
    client: Any
    app: web.Application
    # Makes the expensive query slow for as long as the context lasts (a no-op for SQLite,
    # whose store is big enough for it to be slow anyway).
    slowed: Callable[[], Any]
    stored_events: int


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@pytest.fixture(params=["sqlite", "postgresql"])
async def budgeted(
    request: pytest.FixtureRequest, aiohttp_client: Any, settings: Settings
) -> AsyncIterator[BudgetedServer]:
    settings = dataclasses.replace(settings, read_timeout_s=BUDGET_S)
    if request.param == "sqlite":
        _write_big_store(settings.db_path)
        app = create_app(settings)
        client = await aiohttp_client(app)
        yield BudgetedServer(client, app, _nothing, BIG_STORE_EVENTS)
        await client.close()
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = f"budget_{uuid.uuid4().hex[:12]}"
    url = cluster.create_database(name)
    app = create_app(dataclasses.replace(settings, spool_dir=settings.db_path.with_suffix(".spool"), store_url=url))
    client = await aiohttp_client(app)
    events = [{"key": "page_view", "data": {"text": f"event {n}"}} for n in range(100)]
    assert (await client.post("/events", json=events)).status == 200
    await app_flush(app)

    @contextmanager
    def events_locked() -> Iterator[None]:
        # Another session holds the events table: every read of it waits (PostgreSQL counts
        # the wait in statement_timeout), as behind a long migration or a heavy report.
        with psycopg.connect(url) as holder, holder.transaction():
            holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            yield

    yield BudgetedServer(client, app, events_locked, len(events))
    await client.close()
    cluster.drop_database(name)


async def _timed_get(client: Any, path: str, **params: Any) -> tuple[int, Any, dict[str, str], float]:
    started = time.monotonic()
    response = await client.get(path, params=params)
    body = await response.json() if response.content_type == "application/json" else await response.text()
    return response.status, body, dict(response.headers), time.monotonic() - started


async def test_a_read_over_its_budget_is_stopped_and_answered_503(budgeted: BudgetedServer) -> None:
    client = budgeted.client
    status, health, _, _ = await _timed_get(client, "/health")
    assert status == 200 and health["stored_events"] == budgeted.stored_events, health
    with budgeted.slowed():
        status, body, headers, took_s = await _timed_get(client, "/view", **EXPENSIVE_QUERY)
        assert status == 503, body
        assert headers["Retry-After"] and body["read_timeout_s"] == BUDGET_S, body
        assert "budget of 0.5 s" in body["error"] and "--read-timeout" in body["error"], body
        assert took_s < BUDGET_S + MARGIN_S, took_s
        # More at once than there are reading threads: those queued spend their budget waiting,
        # so each answer still comes within the budget and the margin.
        started = time.monotonic()
        reads = [asyncio.create_task(_timed_get(client, "/view", **EXPENSIVE_QUERY)) for _ in range(READS_AT_ONCE)]
        status, health, _, health_s = await _timed_get(client, "/health")
        assert status == 200 and health_s < HEALTH_BOUND_S, (status, health, health_s)
        answers = await asyncio.gather(*reads)
        assert [answer[0] for answer in answers] == [503] * READS_AT_ONCE, answers
        assert time.monotonic() - started < BUDGET_S + MARGIN_S
    # The threads are free, and their connections fine: the next reads work.
    for _ in range(READER_THREADS * 2):
        status, body, _, _ = await _timed_get(client, "/view", page_size="5")
        assert status == 200 and body["total"] == budgeted.stored_events, body


class HeldReads:
    """Holds every read that runs on a reading thread after `arm()` inside SQLite (a progress
    handler waits for `release`), so every reading thread is provably busy until the test says."""

    def __init__(self) -> None:
        self.armed = False
        self.held: set[int] = set()
        self.lock = threading.Lock()
        self.release = threading.Event()

    def hook(self, connection: apsw.Connection) -> None:
        if connection.open_flags & apsw.SQLITE_OPEN_READONLY:
            connection.set_progress_handler(self._progress, 100, id="test-held-reads")

    def _progress(self) -> bool:
        if self.armed and threading.current_thread().name.startswith("store-reader"):
            with self.lock:
                self.held.add(threading.get_ident())
            self.release.wait(timeout=60)  # bounded: a failing test still ends
        return False


async def test_health_and_metrics_answer_while_every_reading_thread_is_held(
    aiohttp_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldReads()
    monkeypatch.setattr(apsw, "connection_hooks", [*apsw.connection_hooks, held.hook])
    app = create_app(settings)
    client = await aiohttp_client(app)
    assert (await client.post("/events", json=[{"key": "k", "data": {"n": n}} for n in range(300)])).status == 200
    await app_flush(app)
    held.armed = True
    reads = [asyncio.create_task(client.get("/view", params={"where": "data.n:7"})) for _ in range(READS_AT_ONCE)]
    try:

        async def every_thread_held() -> bool:
            return len(held.held) == READER_THREADS

        await eventually_async(every_thread_held, timeout_s=60, interval_s=0.01, what="every reading thread held")
        status, health, _, health_s = await _timed_get(client, "/health")
        assert status == 200 and health["stored_events"] == 300 and health_s < HEALTH_BOUND_S, (health, health_s)
        status, metrics, _, metrics_s = await _timed_get(client, "/metrics")
        assert status == 200 and "tlytics_spool_entries" in metrics and metrics_s < HEALTH_BOUND_S
        assert not any(read.done() for read in reads)  # they were held all along
    finally:
        held.release.set()
    answers = await asyncio.wait_for(asyncio.gather(*reads), timeout=60)
    assert all(answer.status in (200, 503) for answer in answers)
