"""Request-recording middleware in real aiohttp, FastAPI and Flask applications, delivered to
a real server; recording failures never touch the application's answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import ServerProcess, http_json
from tlytics import Client, Config
from tlytics.client import ASGIMiddleware, WSGIMiddleware, aiohttp_middleware, track_event


@pytest.fixture
def server(server_factory: Any) -> ServerProcess:
    return server_factory(flush="50ms").start()  # type: ignore[no-any-return]


@pytest.fixture
def client(server: ServerProcess, tmp_path: Path) -> Any:
    client = Client(Config(server_url=server.url, spool_dir=tmp_path / "spool", flush_period=0.1, spool_interval=0.01))
    yield client
    client.close(timeout=2)


def recorded(server: ServerProcess, client: Client, key: str = "http_request") -> list[dict[str, Any]]:
    assert client.flush(timeout=10)
    server.wait_drained()
    _, body = http_json("GET", f"{server.url}/view?page_size=100")
    return sorted((e["data"] for e in body["events"] if e["key"] == key), key=lambda d: str(d.get("path")))


def check_fields(data: dict[str, Any], method: str, path: str, status: int, size: int | None) -> None:
    assert data["method"] == method
    assert data["path"] == path
    assert data["status_code"] == status
    assert isinstance(data["duration_ms"], float) and data["duration_ms"] >= 0
    assert data["client_ip"] == "127.0.0.1" or data["client_ip"] == "testclient"
    assert data["user_agent"] == "tlytics-test"
    if size is not None:
        assert data["response_size"] == size


async def test_aiohttp_middleware_and_track_event(aiohttp_client: Any, server: ServerProcess, client: Client) -> None:
    @track_event(client, "checkout", {"plan": "pro"})
    async def checkout(request: web.Request) -> web.Response:
        return web.Response(text="paid")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("application bug")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application(middlewares=[aiohttp_middleware(client)])
    app.router.add_post("/checkout", checkout)
    app.router.add_get("/broken", broken)
    app.router.add_get("/missing", missing)
    http = await aiohttp_client(app)
    headers = {"User-Agent": "tlytics-test"}
    assert await (await http.post("/checkout", headers=headers)).text() == "paid"
    assert (await http.get("/broken", headers=headers)).status == 500
    assert (await http.get("/missing", headers=headers)).status == 404

    events = recorded(server, client)
    assert [e["path"] for e in events] == ["/broken", "/checkout", "/missing"]
    check_fields(events[1], "POST", "/checkout", 200, 4)
    check_fields(events[0], "GET", "/broken", 500, None)
    check_fields(events[2], "GET", "/missing", 404, None)
    assert [e for e in recorded(server, client, "checkout")] == [{"plan": "pro"}]


def test_fastapi_asgi_middleware(server: ServerProcess, client: Client) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    app.add_middleware(ASGIMiddleware, client=client)

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    with TestClient(app) as http:
        response = http.get("/items/7", headers={"User-Agent": "tlytics-test"})
        assert response.json() == {"item_id": 7}
        assert http.get("/nope", headers={"User-Agent": "tlytics-test"}).status_code == 404
    events = recorded(server, client)
    check_fields(events[0], "GET", "/items/7", 200, len(response.content))
    check_fields(events[1], "GET", "/nope", 404, None)


def test_flask_wsgi_middleware_and_track_event(server: ServerProcess, client: Client) -> None:
    from flask import Flask

    app = Flask(__name__)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, client)  # type: ignore[method-assign]

    @app.route("/hello")
    @track_event(client, "hello_view")
    def hello() -> str:
        return "hello, world"

    http = app.test_client()
    response = http.get("/hello", headers={"User-Agent": "tlytics-test"}, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.data == b"hello, world"
    response.close()
    events = recorded(server, client)
    check_fields(events[0], "GET", "/hello", 200, len(b"hello, world"))
    assert recorded(server, client, "hello_view") == [{}]


def test_forwarded_address_only_when_trusted(server: ServerProcess, client: Client) -> None:
    from flask import Flask

    app = Flask(__name__)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, client, trust_forwarded=True)  # type: ignore[method-assign]
    app.add_url_rule("/p", "p", lambda: "ok")
    app.test_client().get("/p", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}).close()
    (event,) = recorded(server, client)
    assert event["client_ip"] == "203.0.113.9"


class BrokenClient(Client):
    def emit(self, *args: Any, **kwargs: Any) -> str:
        raise RuntimeError("analytics is broken")


async def test_recording_errors_never_break_the_application(aiohttp_client: Any, tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from flask import Flask

    broken = BrokenClient(Config(server_url="http://127.0.0.1:9", spool_dir=tmp_path / "s"))

    aio = web.Application(middlewares=[aiohttp_middleware(broken)])
    aio.router.add_get("/", track_event(broken, "x")(_ok))
    http = await aiohttp_client(aio)
    assert await (await http.get("/")).text() == "ok"

    fast = FastAPI()
    fast.add_middleware(ASGIMiddleware, client=broken)
    fast.add_api_route("/", lambda: {"ok": True})
    with TestClient(fast) as test_client:
        assert test_client.get("/").json() == {"ok": True}

    flask_app = Flask(__name__)
    flask_app.wsgi_app = WSGIMiddleware(flask_app.wsgi_app, broken)  # type: ignore[method-assign]
    flask_app.add_url_rule("/", "root", lambda: "ok")
    assert flask_app.test_client().get("/").data == b"ok"
    broken.close(0.1)


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")
