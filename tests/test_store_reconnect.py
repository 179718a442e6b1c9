"""A PostgreSQL restart, as a node sees it (issue 19, items 5 and 9), on a throwaway cluster of
the test's own (restarting the session's would pull it from under other tests).

Reads reconnect: a read that finds its thread's connection broken by the restart runs again on
a new one, so no read answers 503 for a restart that is over. /health names a store that stops
answering at once, and turns 503 only after `--store-unhealthy-after`; it is 200 again once the
store answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import app_flush, eventually_async
from tests.postgres_cluster import PostgresCluster, started_cluster
from tlytics.ingest import Settings, create_app
from tlytics.ingest.app import READER_THREADS


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    # Its own cluster, not the session's: these tests restart it.
    yield from started_cluster()


async def _read_statuses(client: Any, reads: int) -> list[int]:
    """The statuses of `reads` /view requests at once (more than the reading threads: each
    thread takes some)."""
    answers = await asyncio.gather(*(client.get("/view", params={"page_size": "5"}) for _ in range(reads)))
    return [answer.status for answer in answers]


async def test_reads_reconnect_after_postgresql_restarts(
    aiohttp_client: Any, settings: Settings, own_cluster: PostgresCluster
) -> None:
    url = own_cluster.create_database("tlytics")
    app = create_app(dataclasses.replace(settings, spool_dir=settings.db_path.with_suffix(".spool"), store_url=url))
    client = await aiohttp_client(app)
    assert (await client.post("/events", json=[{"key": "k"}] * 20)).status == 200
    await app_flush(app)
    for _ in range(3):  # every reading thread opens its connection
        assert await _read_statuses(client, READER_THREADS * 3) == [200] * (READER_THREADS * 3)
    own_cluster.stop("fast")  # every connection is closed by the server
    own_cluster.start()
    # Not one 503: each thread's first read finds its connection gone and reads again.
    for _ in range(3):
        assert await _read_statuses(client, READER_THREADS * 3) == [200] * (READER_THREADS * 3)
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 200 and body["causes"] == [] and body["stored_events"] == 20, body


async def test_health_turns_503_only_after_the_store_is_gone_for_the_threshold(
    aiohttp_client: Any, settings: Settings, own_cluster: PostgresCluster
) -> None:
    url = own_cluster.create_database("tlytics")
    app = create_app(
        dataclasses.replace(
            settings, spool_dir=settings.db_path.with_suffix(".spool"), store_url=url, store_unhealthy_after_s=2.0
        )
    )
    client = await aiohttp_client(app)
    health = await client.get("/health")
    assert health.status == 200 and (await health.json())["causes"] == []
    own_cluster.stop("fast")
    # Named at once, but still in rotation: events are acknowledged into the spool meanwhile.
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 200 and body["causes"] == ["store_unreachable"], body
    assert (await client.post("/events", json=[{"key": "while-down"}])).status == 200

    async def unavailable() -> Any:
        answer = await client.get("/health")
        body = await answer.json()
        return body if answer.status == 503 else None

    body = await eventually_async(unavailable, timeout_s=60, interval_s=0.2, what="/health 503 after the threshold")
    assert body["status"] == "unavailable" and "store_unreachable" in body["causes"], body
    assert "does not answer" in " ".join(body["problems"]), body
    own_cluster.start()

    async def healthy_again() -> Any:
        answer = await client.get("/health")
        body = await answer.json()
        return body if answer.status == 200 and "store_unreachable" not in body["causes"] else None

    body = await eventually_async(healthy_again, timeout_s=60, interval_s=0.2, what="/health 200 again")
    assert body["store"] == "ok", body
