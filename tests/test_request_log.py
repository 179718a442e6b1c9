"""One canonical log line per request, built from bound context: the request id (taken from a
well-formed X-Request-Id, else generated, echoed either way), method, path, status, duration
and what the handler bound; a 500 carries its traceback, as a dict in JSON mode. Checked
in-process with structlog's capture and on a real server's stdout."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from tests.helpers import ServerProcess, eventually
from tlytics.errors import SpoolFull
from tlytics.ingest.auth import ROUTE_ACCESS
from tlytics.ingest.state import COMMITTER
from tlytics.logs import configure_logging, stop_routing_stdlib_logging

GENERATED_ID = re.compile(r"[0-9a-f]{16}\Z")


@pytest.fixture
async def client(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> Any:
    return await aiohttp_client(make_app())


def request_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [log for log in logs if log["event"] == "request"]


def bound_logs() -> Any:
    """capture_logs, with the context bound by the middleware and the handlers merged in."""
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


async def test_one_line_per_request_with_what_the_handler_bound(client: Any) -> None:
    with bound_logs() as logs:
        response = await client.post("/events", json=[{"key": "a"}, {"key": "b"}])
        assert response.status == 200
        assert (await client.get("/health")).status == 200
    posted, health = request_lines(logs)
    assert posted["method"] == "POST" and posted["path"] == "/events" and posted["status"] == 200
    assert posted["events_accepted"] == 2
    assert isinstance(posted["duration_ms"], float) and posted["duration_ms"] >= 0
    assert posted["log_level"] == "info"
    assert GENERATED_ID.match(posted["request_id"])
    assert response.headers["X-Request-Id"] == posted["request_id"]
    # The next request starts from a clean context: its own id, nothing bound by the first.
    assert health["path"] == "/health" and "events_accepted" not in health
    assert health["request_id"] != posted["request_id"]


async def test_a_well_formed_incoming_request_id_is_kept_and_another_replaced(client: Any) -> None:
    with bound_logs() as logs:
        kept = await client.get("/health", headers={"X-Request-Id": "edge-7f3a.1:2"})
        replaced = [
            await client.get("/health", headers={"X-Request-Id": value})
            for value in ("has space", "x" * 129, 'quote"d', "")
        ]
    assert kept.headers["X-Request-Id"] == "edge-7f3a.1:2"
    lines = request_lines(logs)
    assert lines[0]["request_id"] == "edge-7f3a.1:2"
    for response, line in zip(replaced, lines[1:], strict=True):
        assert GENERATED_ID.match(response.headers["X-Request-Id"])
        assert line["request_id"] == response.headers["X-Request-Id"]


async def test_error_answers_and_streams_carry_the_request_id(client: Any) -> None:
    for response in (
        await client.get("/no-such-endpoint"),
        await client.post("/events", data=b"[", headers={"Content-Type": "application/json"}),
        await client.get("/export"),  # streamed: its headers go out before the middleware returns
        await client.get("/static/dashboard.js"),
    ):
        assert GENERATED_ID.match(response.headers["X-Request-Id"]), response.url


async def test_a_503_says_why_on_its_line(client: Any) -> None:
    async def full(entry: bytes, count: int) -> None:
        raise SpoolFull("spool holds 64 of 64 bytes")

    client.app[COMMITTER].append = full
    with bound_logs() as logs:
        response = await client.post("/events", json=[{"key": "a"}])
    assert response.status == 503
    (line,) = request_lines(logs)
    assert line["status"] == 503 and line["log_level"] == "warning"
    assert line["error"] == "spool is full, retry later: spool holds 64 of 64 bytes"
    assert "events_accepted" not in line


async def test_a_500_logs_its_traceback_on_the_request_line(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    app = make_app()
    add_failing_route(app)
    client = await aiohttp_client(app)
    with bound_logs() as logs:
        response = await client.get("/boom")
    assert response.status == 500
    assert await response.json() == {"error": "internal error; the request was not accepted"}
    (line,) = [log for log in logs if log["log_level"] == "error"]
    assert line["event"] == "request" and line["status"] == 500 and line["path"] == "/boom"
    assert isinstance(line["exc_info"], RuntimeError)


def add_failing_route(app: web.Application) -> None:
    async def boom(request: web.Request) -> web.Response:
        secret = "do-not-log-me"  # a local of the failing frame: never in the logs
        raise RuntimeError(f"a bug ({len(secret)})")

    app[ROUTE_ACCESS].declare(app.router.add_get("/boom", boom, allow_head=False), "open")


@pytest.fixture
def json_logs() -> Iterator[None]:
    """The server's JSON configuration, for one test."""
    configure_logging("info", json=True)
    # The production setting caches each module's logger on first use, with the stdout of
    # that moment: here, pytest's capture of this test. Not cached, so later tests are unaffected.
    structlog.configure(cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()
    stop_routing_stdlib_logging()


async def test_a_500_traceback_is_a_dict_in_json_mode(
    aiohttp_client: Any, make_app: Callable[..., web.Application], json_logs: None, capsys: Any
) -> None:
    app = make_app()
    add_failing_route(app)
    client = await aiohttp_client(app)
    response = await client.get("/boom")
    assert response.status == 500
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if line.get("status") == 500]
    assert line["event"] == "request" and line["level"] == "error" and line["logger"] == "tlytics.ingest"
    assert line["request_id"] == response.headers["X-Request-Id"]
    (exception,) = line["exception"]
    assert exception["exc_type"] == "RuntimeError" and exception["exc_value"] == "a bug (13)"
    assert exception["frames"][-1]["name"] == "boom"
    assert "do-not-log-me" not in json.dumps(lines)


def test_a_real_server_logs_one_json_line_per_request(shared_server: ServerProcess) -> None:
    import urllib.request

    server = shared_server
    request = urllib.request.Request(
        f"{server.url}/events",
        data=b'[{"key": "a"}, {"key": "b"}, {"key": "c"}]',
        method="POST",
        headers={"Content-Type": "application/json", "X-Request-Id": "real-server-1"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["X-Request-Id"] == "real-server-1"

    def logged_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("request_id") == "real-server-1"]

    # Written before the answer, read here when it is on disk.
    (line,) = eventually(logged_lines, what="the request's line in the server's log")
    assert line["event"] == "request" and line["level"] == "info" and line["logger"] == "tlytics.ingest"
    assert (line["method"], line["path"], line["status"], line["events_accepted"]) == ("POST", "/events", 200, 3)
    assert isinstance(line["duration_ms"], float) and "timestamp" in line


def test_a_real_server_log_is_json_lines_even_for_what_aiohttp_logs(server_factory: Any) -> None:
    """A request aiohttp cannot parse (a header line over 8190 bytes) is logged as one JSON
    line naming the fault (issue 19: aiohttp's own line quoted the header; no longer)."""
    import socket

    server: ServerProcess = server_factory().start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"x" * 9000 + b"\r\n\r\n")
        assert sock.recv(64).split(b" ")[1] == b"400"

    def refusal_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in server.log().splitlines()]  # every line, or it raises
        return [line for line in lines if line.get("event") == "http_request_refused"]

    (line,) = eventually(refusal_lines, what="the refusal's line in the server's log")
    assert line["level"] == "warning" and line["exc_type"] == "LineTooLong"
    server.stop()
    assert all(json.loads(line) for line in server.log().splitlines())
