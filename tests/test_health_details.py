"""/health is open, but says little to anyone (issue 19, item 8): healthy or not and the kinds
of problem (`causes`). The figures and the texts that name the store (host, port, user,
database, the driver's error) and the counts need a key that may read raw events; a stats key or
a wrong key gets the short answer, never a 401. While no reading key is set, reading is open to
all, and so are the details. And its 503 names the cause of now, not an earlier one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from aiohttp import web

import tlytics.ingest
from tests.helpers import free_port
from tlytics.errors import SpoolError, SpoolFull
from tlytics.ingest import Settings, create_app
from tlytics.ingest.monitoring import CAUSES
from tlytics.ingest.state import SPOOL

READ_KEY = "read-key-0123456789"
STATS_KEY = "stats-key-0123456789"
SHORT_ANSWER = {"status", "port", "causes"}


async def _health(client: Any, key: str | None = None) -> tuple[int, dict[str, Any], str]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    response = await client.get("/health", headers=headers)
    text = await response.text()
    return response.status, await response.json(), text


async def test_without_a_read_key_health_says_only_whether_and_what_kind(
    aiohttp_client: Any, settings: Settings
) -> None:
    app: web.Application = create_app(dataclasses.replace(settings, read_keys=(READ_KEY,), stats_keys=(STATS_KEY,)))
    client = await aiohttp_client(app)
    for key in (None, STATS_KEY, "not-a-key-at-all-0000"):
        status, body, _ = await _health(client, key)
        assert status == 200 and set(body) == SHORT_ANSWER and body["status"] == "healthy", (key, body)
    status, body, _ = await _health(client, READ_KEY)
    assert status == 200 and body["stored_events"] == 0 and body["problems"] == [] and body["store"] == "ok", body


async def test_an_unreachable_store_is_named_only_to_readers(aiohttp_client: Any, settings: Settings) -> None:
    # Nothing listens there: the node starts (PostgreSQL may come up later), and says 503.
    port = free_port()
    url = f"postgresql://secret_user_x@127.0.0.1:{port}/secret_db_x"
    app: web.Application = create_app(
        dataclasses.replace(
            settings, spool_dir=settings.db_path.with_suffix(".spool"), store_url=url, read_keys=(READ_KEY,)
        )
    )
    client = await aiohttp_client(app)
    status, body, text = await _health(client)
    # (The writer's first drain may have failed on it too: writer_failing, then.)
    assert status == 503 and set(body) == SHORT_ANSWER and "store_unreachable" in body["causes"], body
    assert set(body["causes"]) <= set(CAUSES)
    for secret in ("secret_user_x", "secret_db_x", str(port), "127.0.0.1", "refused"):
        assert secret not in text, secret
    status, body, text = await _health(client, READ_KEY)
    assert status == 503 and body["stored_events"] is None and "secret_db_x" in body["store"], body


async def test_health_names_the_latest_cause_not_an_earlier_one(
    aiohttp_client: Any, settings: Settings, monkeypatch: Any
) -> None:
    app: web.Application = create_app(settings)
    client = await aiohttp_client(app)
    spool = app[SPOOL]

    def failing_append(entries: Any) -> None:
        raise SpoolError("spool append failed: disk I/O error (the earlier cause)")

    def append_to_a_full_disk(entries: Any) -> None:
        raise SpoolFull("disk has 0 bytes free; 67108864 are kept in reserve")

    with monkeypatch.context() as patched:
        patched.setattr(spool, "append_many", failing_append)
        assert (await client.post("/events", json=[{"key": "k"}])).status == 503
        status, body, _ = await _health(client)
        assert status == 503 and body["causes"] == ["spool_failing"], body
        # Then the disk fills up: that is the cause from here on, in the answers and in /health.
        patched.setattr(spool, "append_many", append_to_a_full_disk)
        patched.setattr(spool, "disk_free_bytes", lambda: 0)
        answer = await client.post("/events", json=[{"key": "k"}])
        assert answer.status == 503 and "spool is full" in (await answer.json())["error"]
        status, body, text = await _health(client)
        assert status == 503 and body["causes"] == ["spool_disk_full"], body
        assert "earlier cause" not in text
    assert (await client.post("/events", json=[{"key": "k"}])).status == 200
    status, body, _ = await _health(client)
    assert status == 200 and body["causes"] == [], body


def test_the_causes_are_the_documented_ones() -> None:
    document = json.loads((Path(tlytics.ingest.__file__).parent / "openapi.json").read_text())
    documented = document["components"]["schemas"]["Health"]["properties"]["causes"]["items"]["enum"]
    assert documented == list(CAUSES)
