"""What the trimmed 1-event request path (issue 22) must still do, through a real server on
loopback: a post whose spool write fails is a 503 and nothing is counted, stored or
acknowledged; every answered request is counted once in /metrics; the access check that
returns early for a server without keys or limits still refuses when a limit or key applies;
the request line renders an exception as structlog does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import structlog
from aiohttp import web

import tlytics.ingest.request_line as request_line
from tests.helpers import app_flush, store_count
from tlytics.errors import SpoolError
from tlytics.ingest.state import COUNTERS, SPOOL
from tlytics.logs import configure_logging, stop_routing_stdlib_logging
from tlytics.rate import parse_rate

_EVENT = {"key": "page_view", "data": {"n": 1}}


def _figures(text: str) -> dict[str, float]:
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}


async def _metrics(client: Any) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status == 200
    return _figures(await response.text())


@pytest.mark.parametrize(("path", "body"), [("/events", [_EVENT]), ("/batch", {"events": [_EVENT]})])
async def test_a_failed_spool_write_is_a_503_and_no_acknowledgement(
    aiohttp_client: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch, path: str, body: Any
) -> None:
    app: web.Application = make_app()
    client = await aiohttp_client(app)

    def broken(values: Any) -> Any:
        raise SpoolError("disk I/O error (injected)")

    monkeypatch.setattr(app[SPOOL], "append_many", broken)
    answers = await asyncio.gather(*(client.post(path, json=body) for _ in range(5)))
    assert [answer.status for answer in answers] == [503] * 5
    assert all(answer.headers["Retry-After"] == "1" for answer in answers)
    assert app[COUNTERS].accepted_events == 0 and app[COUNTERS].accepted_requests == 0
    health = await (await client.get("/health")).json()
    assert health["accepted_events"] == 0
    figures = await _metrics(client)
    assert figures["tlytics_events_accepted_total"] == 0
    assert figures['tlytics_requests_rejected_total{reason="unavailable"}'] == 5
    assert figures[f'tlytics_request_duration_seconds_count{{method="POST",route="{path}",status="503"}}'] == 5
    monkeypatch.undo()
    await app_flush(app)
    assert store_count(app) == 0
    assert (await client.post(path, json=body)).status == 200
    await app_flush(app)
    assert store_count(app) == 1 and app[COUNTERS].accepted_events == 1


async def test_each_request_is_counted_once(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app())
    posts = await asyncio.gather(*(client.post("/events", json=[_EVENT]) for _ in range(40)))
    assert all(post.status == 200 for post in posts)
    for _ in range(3):
        assert (await client.post("/batch", json={"events": [_EVENT, _EVENT]})).status == 200
    assert (await client.get("/batch")).status == 405
    assert (await client.request("PATCH", "/nowhere")).status == 404
    figures = await _metrics(client)
    count = "tlytics_request_duration_seconds_count"
    assert figures[f'{count}{{method="POST",route="/events",status="200"}}'] == 40
    assert figures[f'{count}{{method="POST",route="/batch",status="200"}}'] == 3
    assert figures[f'{count}{{method="GET",route="unmatched",status="405"}}'] == 1
    assert figures[f'{count}{{method="PATCH",route="unmatched",status="404"}}'] == 1
    # Every request lands in exactly one bucket: +Inf holds them all, once.
    le_inf = 'tlytics_request_duration_seconds_bucket{le="+Inf",method="POST",route="/events",status="200"}'
    assert figures[le_inf] == 40
    assert figures["tlytics_events_accepted_total"] == 46


async def test_a_limit_applies_to_requests_without_a_key(aiohttp_client: Any, make_app: Any) -> None:
    """No keys, a write limit: the early return of the access check must not skip the limit."""
    client = await aiohttp_client(make_app(rate_limit=parse_rate("1/s,burst=2")))
    statuses = [(await client.post("/events", json=[_EVENT])).status for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429]


async def test_a_read_limit_does_not_limit_posts(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(read_rate_limit=parse_rate("1/s,burst=1")))
    assert [(await client.post("/events", json=[_EVENT])).status for _ in range(5)] == [200] * 5
    assert [(await client.get("/keys")).status for _ in range(2)] == [200, 429]


async def test_keys_once_configured_are_needed(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(read_keys=("r-secret",)))
    # Only reading keys: posting needs none, reading does.
    assert (await client.post("/events", json=[_EVENT])).status == 200
    assert (await client.get("/keys")).status == 401
    assert (await client.get("/keys", headers={"Authorization": "Bearer r-secret"})).status == 200


@pytest.fixture
def json_logs() -> Any:
    configure_logging("info", json=True)
    structlog.configure(cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()
    stop_routing_stdlib_logging()


def test_a_request_line_with_an_exception_is_structlogs(json_logs: None, capsys: Any) -> None:
    """The exception renderer is skipped only when the line has no exc_info."""
    log = structlog.get_logger("tlytics.ingest")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        failure = exc

    async def both() -> None:
        request_line.start_request("0123456789abcdef", "POST", "/events")
        log.error("request", status=500, exc_info=failure)
        request_line.log_line(log, "error", "request", status=500, exc_info=failure)

    asyncio.run(both())
    by_structlog, by_log_line = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    by_structlog.pop("timestamp"), by_log_line.pop("timestamp")
    assert by_log_line == by_structlog
    assert by_log_line["exception"][0]["exc_type"] == "ValueError"
