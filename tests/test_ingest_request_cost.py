"""The cheaper per-request path of ingest (issue 22) says and logs exactly what the longer one
did: the request's log line is structlog's line, byte for byte; an accepted post's answer has
the same body and every header once; the context bound for a request is structlog's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web

import tlytics.ingest.request_line as request_line
from tlytics.ingest.responses import SECURITY_HEADERS, accepted_response
from tlytics.logs import configure_logging, stop_routing_stdlib_logging


@pytest.fixture
def json_logs() -> Iterator[None]:
    configure_logging("info", json=True)
    structlog.configure(cache_logger_on_first_use=False)  # each test's own capture of stdout
    yield
    structlog.reset_defaults()
    stop_routing_stdlib_logging()


def _without_time(line: str) -> dict[str, Any]:
    fields = dict(json.loads(line))
    fields.pop("timestamp")
    return fields


@pytest.mark.parametrize("level", ["info", "warning"])
def test_the_request_line_is_the_line_structlog_writes(json_logs: None, capsys: Any, level: str) -> None:
    log = structlog.get_logger("tlytics.ingest")

    async def both() -> None:
        request_line.start_request("0123456789abcdef", "POST", "/events")
        request_line.bind("events_accepted", 3)
        structlog.contextvars.bind_contextvars(key_label="web")
        getattr(log, level)("request", status=200, duration_ms=1.25, remote="127.0.0.1")
        request_line.log_line(log, level, "request", status=200, duration_ms=1.25, remote="127.0.0.1")

    asyncio.run(both())
    by_structlog, by_log_line = capsys.readouterr().out.splitlines()
    # The same keys in the same order, the same values (the timestamp aside: a later time).
    assert list(json.loads(by_log_line)) == list(json.loads(by_structlog))
    assert _without_time(by_log_line) == _without_time(by_structlog)
    assert _without_time(by_log_line)["request_id"] == "0123456789abcdef"


def test_a_level_the_configuration_filters_out_writes_nothing(capsys: Any) -> None:
    configure_logging("warning", json=True)
    structlog.configure(cache_logger_on_first_use=False)
    try:
        log = structlog.get_logger("tlytics.ingest")
        request_line.log_line(log, "info", "request", status=200)
        request_line.log_line(log, "warning", "request", status=503)
        lines = capsys.readouterr().out.splitlines()
    finally:
        structlog.reset_defaults()
        stop_routing_stdlib_logging()
    assert [json.loads(line)["status"] for line in lines] == [503]


def test_a_new_request_starts_from_an_empty_context() -> None:
    async def two_requests() -> dict[str, Any]:
        request_line.start_request("first", "POST", "/events")
        request_line.bind("events_accepted", 1)
        structlog.contextvars.bind_contextvars(key_label="web")
        request_line.start_request("second", "GET", "/health")
        return structlog.contextvars.get_contextvars()

    context = asyncio.run(two_requests())
    assert context == {"request_id": "second", "method": "GET", "path": "/health"}


@pytest.mark.parametrize("count", [0, 1, 7, 100, 5000])
def test_an_accepted_answer_is_the_json_it_was(count: int) -> None:
    response = accepted_response(count)
    assert response.status == 200 and response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    assert orjson.loads(response.body) == {"message": f"Successfully queued {count} events", "count": count}
    # Each answer its own headers: adding one to an answer does not add it to the next.
    response.headers["X-Extra"] = "1"
    assert "X-Extra" not in accepted_response(count).headers


async def test_an_accepted_post_carries_every_header_once(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app())
    response = await client.post("/events", json=[{"key": "a"}], headers={"X-Request-Id": "req-1"})
    assert response.status == 200
    assert await response.json() == {"message": "Successfully queued 1 events", "count": 1}
    for name, value in {**SECURITY_HEADERS, "X-Request-Id": "req-1", "Content-Type": "application/json"}.items():
        assert response.headers.getall(name) == [value]
    # An answer built the ordinary way gets the same headers from the middleware's hook.
    health = await client.get("/health", headers={"X-Request-Id": "req-2"})
    for name, value in {**SECURITY_HEADERS, "X-Request-Id": "req-2"}.items():
        assert health.headers.getall(name) == [value]
