"""A scriptable HTTP server on 127.0.0.1 for client fault tests: it records every request and
answers as the test says (503 with Retry-After, 400 naming a poison event, or no answer at
all). Tests of normal delivery use the real Tlytics server instead."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.helpers import free_port


@dataclass
class Received:
    at: float
    events: list[dict[str, Any]]
    headers: dict[str, str]


Answer = tuple[int, dict[str, Any], dict[str, str]]


def accept_all(events: list[dict[str, Any]], headers: dict[str, str]) -> Answer:
    return 200, {"message": f"Successfully queued {len(events)} events", "count": len(events)}, {}


@dataclass
class FakeServer:
    answer: Callable[[list[dict[str, Any]], dict[str, str]], Answer] = accept_all
    hang: bool = False
    received: list[Received] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ids(self) -> list[str]:
        return [e["id"] for r in self.received for e in r.events]

    async def _batch(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip" and body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        events = orjson.loads(body)["events"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.hang:
            await asyncio.sleep(3600)
        status, payload, extra = self.answer(events, headers)
        if status == 200:
            self.received.append(Received(time.monotonic(), events, headers))
        else:
            self.received.append(Received(time.monotonic(), [], headers))
        return web.Response(status=status, body=orjson.dumps(payload), headers=extra, content_type="application/json")

    def start(self) -> FakeServer:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/batch", self._batch)
            self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
