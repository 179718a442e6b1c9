"""A slow read holds up only itself: every reading thread has its own read-only connection,
and the server reads on several threads, so `/health` answers while a long filtered count or
page is still running inside SQLite."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import apsw
import pytest
from aiohttp import web

from tests.helpers import app_flush, eventually_async


class HeldRead:
    """Holds the first read that runs on a read-only connection after `arm()` inside SQLite
    (a progress handler, called while a statement runs, waits for `release`), so that read
    is provably still running, holding its connection and its snapshot, until the test says."""

    def __init__(self) -> None:
        self.armed = False
        self.holding_thread: int | None = None
        self.started = threading.Event()
        self.release = threading.Event()

    def arm(self) -> None:
        self.armed = True

    def hook(self, connection: apsw.Connection) -> None:
        if connection.open_flags & apsw.SQLITE_OPEN_READONLY:
            connection.set_progress_handler(self._progress, 100)

    def _progress(self) -> bool:
        if self.armed and self.holding_thread is None:
            self.holding_thread = threading.get_ident()
            self.started.set()
        if self.holding_thread == threading.get_ident() and not self.release.is_set():
            self.release.wait(timeout=60)  # bounded: a failing test still ends
        return False  # go on (True would abort the statement)


async def test_health_answers_while_a_slow_read_is_running(
    client: Any, app: web.Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldRead()
    monkeypatch.setattr(apsw, "connection_hooks", [*apsw.connection_hooks, held.hook])
    events = [{"key": "page_view", "data": {"user_id": n % 7}} for n in range(500)]
    assert (await client.post("/events", json=events)).status == 200
    await app_flush(app)

    held.arm()
    slow_view = asyncio.create_task(client.get("/view", params={"where": "data.user_id:3"}))
    try:

        async def read_started() -> bool:
            return held.started.is_set()

        await eventually_async(read_started, timeout_s=60, interval_s=0.01, what="the slow read starting")
        health = await client.get("/health")
        assert health.status == 200
        body = await health.json()
        assert body["store"] == "ok" and body["stored_events"] == 500
        # The slow read was running all along: it is held until released below.
        assert not slow_view.done() and not held.release.is_set()
        assert (await client.get("/keys")).status == 200  # other reads go on too
    finally:
        held.release.set()
    view = await asyncio.wait_for(slow_view, timeout=60)
    assert view.status == 200
    assert (await view.json())["total"] == 71  # user_id 3: n = 3, 10, …, 493
