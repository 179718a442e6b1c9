"""A full spool pushes back: 503 with Retry-After, /health names the problem, and the server
takes events again by itself once the writer has drained it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.helpers import app_flush, make_client, store_count


async def test_spool_full_is_503_and_health_says_so(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client, app = await make_client(aiohttp_client, make_app, spool_max_bytes=64 * 1024)
    statuses, health_statuses = [], []
    # The spool fills within a few posts. The writer may drain it between the refused post and
    # /health (a backlog wakes it): then /health is healthy again, and the spool is filled again.
    for _ in range(200):
        response = await client.post("/events", json=[{"key": "fill", "data": {"pad": "x" * 4000}}] * 5)
        statuses.append(response.status)
        if response.status != 503:
            continue
        assert response.headers["Retry-After"] == "1"
        assert "spool is full" in (await response.json())["error"]
        health = await client.get("/health")
        health_statuses.append(health.status)
        if health.status == 503:
            break
    assert 503 in statuses, statuses
    assert health_statuses and health_statuses[-1] == 503, (statuses, health_statuses)
    answer = await health.json()
    assert any("spool is full" in p for p in answer["problems"])
    accepted_before = answer["accepted_events"]
    # The writer drains, the spool shrinks, and the server takes events again by itself.
    await app_flush(app)
    assert (await client.get("/health")).status == 200
    assert (await client.post("/events", json=[{"key": "again"}])).status == 200
    await app_flush(app)
    assert store_count(app) == accepted_before + 1
