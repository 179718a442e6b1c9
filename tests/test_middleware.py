"""Request-recording middleware in real aiohttp, FastAPI, Flask and Django applications,
delivered to a real server: the route template beside the raw path, the client address
truncated by default, crawlers marked; recording failures never touch the application's
answer."""

from __future__ import annotations

import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import ServerProcess
from tests.shared_server import StoredSince
from tlytics import Client, Config
from tlytics.client import ASGIMiddleware, DjangoMiddleware, WSGIMiddleware, aiohttp_middleware, track_event
from tlytics.client.middleware import is_bot, truncated_ip

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture
def server(shared_server: ServerProcess) -> ServerProcess:
    """The run's shared server: a test tells its own events apart from the earlier tests' by
    id (`recorded` leaves out every event stored before the test's client was made)."""
    return shared_server


# What each test's client's server stored since the client was made, by the client's id().
_STORED_SINCE: dict[int, StoredSince] = {}


@pytest.fixture
def client(server: ServerProcess, tmp_path: Path) -> Any:
    stored = StoredSince(server)  # made before the client: none of the test's events is in it
    client = Client(Config(server_url=server.url, spool_dir=tmp_path / "spool", flush_period=0.1, spool_interval=0.01))
    _STORED_SINCE[id(client)] = stored
    yield client
    client.close(timeout=2)
    del _STORED_SINCE[id(client)]


def recorded(server: ServerProcess, client: Client, key: str = "http_request") -> list[dict[str, Any]]:
    """The data of every `key` event the server stored for this test, sorted by path."""
    assert client.flush(timeout=10)
    server.wait_drained()
    events = [e for e in _STORED_SINCE[id(client)].events() if e["key"] == key]
    return sorted((e["data"] for e in events), key=lambda d: str(d.get("path")))


def check_fields(
    data: dict[str, Any], method: str, route: str | None, path: str, status: int, size: int | None
) -> None:
    assert data["method"] == method
    assert data["route"] == route
    assert data["path"] == path
    assert data["status_code"] == status
    assert isinstance(data["duration_ms"], float) and data["duration_ms"] >= 0
    if size is not None:
        assert data["response_size"] == size


async def test_aiohttp_middleware_and_track_event(aiohttp_client: Any, server: ServerProcess, client: Client) -> None:
    @track_event(client, "checkout", {"plan": "pro"})
    async def checkout(request: web.Request) -> web.Response:
        return web.Response(text="paid")

    async def user(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["user_id"])

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("application bug")

    app = web.Application(middlewares=[aiohttp_middleware(client)])
    app.router.add_post("/checkout", checkout)
    app.router.add_get("/users/{user_id}", user)
    app.router.add_get("/broken", broken)
    http = await aiohttp_client(app)
    assert await (await http.post("/checkout", headers={"User-Agent": BROWSER})).text() == "paid"
    for user_id in ("1", "22"):
        assert await (await http.get(f"/users/{user_id}", headers={"User-Agent": GOOGLEBOT})).text() == user_id
    assert (await http.get("/broken")).status == 500
    assert (await http.get("/missing", headers={"User-Agent": BROWSER})).status == 404

    events = recorded(server, client)
    assert [e["path"] for e in events] == ["/broken", "/checkout", "/missing", "/users/1", "/users/22"]
    broken_event, checkout_event, missing, user_1, user_22 = events
    check_fields(checkout_event, "POST", "/checkout", "/checkout", 200, 4)
    check_fields(broken_event, "GET", "/broken", "/broken", 500, None)
    check_fields(missing, "GET", None, "/missing", 404, None)  # no route matched
    check_fields(user_1, "GET", "/users/{user_id}", "/users/1", 200, 1)
    assert user_22["route"] == "/users/{user_id}"  # one route, however many users
    # The peer 127.0.0.1, truncated to its /24 by default.
    assert {e["client_ip"] for e in events} == {"127.0.0.0"}
    assert (checkout_event["user_agent"], checkout_event["is_bot"]) == (BROWSER, False)
    assert (user_1["user_agent"], user_1["is_bot"]) == (GOOGLEBOT, True)
    assert missing["is_bot"] is False
    # aiohttp's own client says so in its User-Agent, and the crawler list counts scripts.
    assert broken_event["user_agent"].startswith("Python/") and broken_event["is_bot"] is True
    assert recorded(server, client, "checkout") == [{"plan": "pro"}]


def test_fastapi_asgi_middleware(server: ServerProcess, client: Client) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    app.add_middleware(ASGIMiddleware, client=client, trust_forwarded=True)

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    headers = {"User-Agent": GOOGLEBOT, "X-Forwarded-For": "2001:db8:abcd:1234::7, 10.0.0.1"}
    with TestClient(app) as http:
        response = http.get("/items/7", headers=headers)
        assert response.json() == {"item_id": 7}
        assert http.get("/nope", headers={"User-Agent": BROWSER}).status_code == 404
    item_event, nope = recorded(server, client)
    check_fields(item_event, "GET", "/items/{item_id}", "/items/7", 200, len(response.content))
    assert item_event["client_ip"] == "2001:db8:abcd::"  # the forwarded address's /48
    assert item_event["is_bot"] is True
    check_fields(nope, "GET", None, "/nope", 404, None)
    # TestClient's peer is the name "testclient", which no truncation can make anonymous.
    assert nope["client_ip"] is None
    assert nope["is_bot"] is False


def test_flask_wsgi_middleware_and_track_event(server: ServerProcess, client: Client) -> None:
    from flask import Flask

    app = Flask(__name__)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, client, record_ip="full")  # type: ignore[method-assign]

    @app.route("/hello/<name>")
    @track_event(client, "hello_view")
    def hello(name: str) -> str:
        return f"hello, {name}"

    http = app.test_client()
    response = http.get("/hello/ada", headers={"User-Agent": BROWSER}, environ_base={"REMOTE_ADDR": "192.0.2.77"})
    assert response.data == b"hello, ada"
    response.close()
    http.get("/absent", environ_base={"REMOTE_ADDR": "192.0.2.77"}).close()
    absent, hello_event = recorded(server, client)
    check_fields(hello_event, "GET", "/hello/<name>", "/hello/ada", 200, len(b"hello, ada"))
    assert hello_event["client_ip"] == "192.0.2.77"  # record_ip="full"
    assert (hello_event["user_agent"], hello_event["is_bot"]) == (BROWSER, False)
    check_fields(absent, "GET", None, "/absent", 404, None)
    assert recorded(server, client, "hello_view") == [{}]


def test_wsgi_records_a_non_ascii_path_as_the_text_it_is(server: ServerProcess, client: Client) -> None:
    """WSGI gives PATH_INFO as the URL's bytes read as latin-1 (PEP 3333): /café was recorded
    as /cafÃ©. A path that is not UTF-8 is recorded with replacement characters."""
    from flask import Flask

    app = Flask(__name__)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, client)  # type: ignore[method-assign]

    @app.route("/<word>")
    def echo(word: str) -> str:
        return word

    http = app.test_client()
    http.get("/caf%C3%A9").close()
    http.get("/bad%FF").close()
    bad, cafe = recorded(server, client)
    assert (cafe["path"], bad["path"]) == ("/café", "/bad\ufffd")


def test_forwarded_address_only_when_trusted(server: ServerProcess, client: Client) -> None:
    from flask import Flask

    app = Flask(__name__)
    app.add_url_rule("/p", "p", lambda: "ok")
    trusting = WSGIMiddleware(app.wsgi_app, client, trust_forwarded=True)
    untrusting = WSGIMiddleware(app.wsgi_app, client, record_ip="full")
    hidden = WSGIMiddleware(app.wsgi_app, client, record_ip="none", trust_forwarded=True)
    for middleware, path in ((trusting, "/p?1"), (untrusting, "/p?2"), (hidden, "/p?3")):
        app.wsgi_app = middleware  # type: ignore[method-assign]
        environ = {"REMOTE_ADDR": "10.1.2.3"}
        app.test_client().get(path, headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}, environ_base=environ).close()
    ips = [event["client_ip"] for event in recorded(server, client)]  # same path: stored order kept
    assert sorted(ips, key=str) == sorted(["203.0.113.0", "10.1.2.3", None], key=str)


STREAM_PAUSE_S = 0.2


def _django_urlconf() -> Any:
    from django.http import HttpResponse, JsonResponse
    from django.urls import path

    def user(request: Any, user_id: int) -> Any:
        return JsonResponse({"user_id": user_id})

    def broken(request: Any) -> Any:
        raise RuntimeError("application bug")

    async def ping(request: Any) -> Any:
        return HttpResponse(b"pong")

    def stream(request: Any) -> Any:
        from django.http import StreamingHttpResponse

        def chunks() -> Iterator[bytes]:
            for chunk in (b"first,", b"second,", b"third"):
                time.sleep(STREAM_PAUSE_S)  # the body takes this long to produce, chunk by chunk
                yield chunk

        return StreamingHttpResponse(chunks())

    async def stream_async(request: Any) -> Any:
        import asyncio

        from django.http import StreamingHttpResponse

        async def chunks() -> AsyncIterator[bytes]:
            for chunk in (b"first,", b"second,", b"third"):
                await asyncio.sleep(STREAM_PAUSE_S)
                yield chunk

        return StreamingHttpResponse(chunks())

    # ROOT_URLCONF may be a module object instead of a dotted path: no urls.py file needed.
    urlconf = types.ModuleType("tlytics_test_urls")
    urlconf.urlpatterns = [  # type: ignore[attr-defined]
        path("users/<int:user_id>/", user),
        path("broken/", broken),
        path("ping/", ping),
        path("stream/", stream),
        path("stream-async/", stream_async),
        path("health/", ping),
    ]
    return urlconf


@pytest.fixture
def django_settings(client: Client) -> Any:
    import django
    from django.conf import settings

    if not settings.configured:  # once per process: Django's settings are process-wide
        settings.configure(
            DEBUG=False, ALLOWED_HOSTS=["testserver"], MIDDLEWARE=[], ROOT_URLCONF=None, LOGGING_CONFIG=None
        )
        django.setup()
    from django.test import override_settings

    with override_settings(
        ROOT_URLCONF=_django_urlconf(),
        MIDDLEWARE=["tlytics.client.DjangoMiddleware"],
        TLYTICS={"client": client, "record_ip": "truncated"},
    ):
        yield settings


async def test_django_middleware_sync_and_async(server: ServerProcess, client: Client, django_settings: Any) -> None:
    from django.test import AsyncClient
    from django.test import Client as DjangoTestClient

    sync_http = DjangoTestClient(raise_request_exception=False, REMOTE_ADDR="198.51.100.23", HTTP_USER_AGENT=GOOGLEBOT)
    response = await _in_thread(sync_http.get, "/users/42/")
    assert response.json() == {"user_id": 42}
    assert (await _in_thread(sync_http.get, "/broken/")).status_code == 500
    assert (await _in_thread(sync_http.get, "/nowhere/")).status_code == 404
    async_http = AsyncClient()  # under ASGI, from 127.0.0.1
    assert (await async_http.get("/ping/", headers={"User-Agent": BROWSER})).content == b"pong"

    broken_event, nowhere, ping, user = recorded(server, client)
    check_fields(user, "GET", "/users/<int:user_id>/", "/users/42/", 200, len(response.content))
    assert (user["client_ip"], user["is_bot"]) == ("198.51.100.0", True)
    check_fields(broken_event, "GET", "/broken/", "/broken/", 500, None)
    check_fields(nowhere, "GET", None, "/nowhere/", 404, None)
    check_fields(ping, "GET", "/ping/", "/ping/", 200, 4)
    assert (ping["client_ip"], ping["user_agent"], ping["is_bot"]) == ("127.0.0.0", BROWSER, False)


async def _in_thread(function: Any, *args: Any) -> Any:
    """Django's sync test client refuses to run on an event loop's thread."""
    import asyncio

    return await asyncio.to_thread(function, *args)


def test_django_middleware_without_a_client_is_a_configuration_error(django_settings: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    for tlytics_setting in ({}, {"client": "tests.no_such_module.client"}, {"client": object()}):
        with override_settings(TLYTICS=tlytics_setting), pytest.raises((ImproperlyConfigured, ImportError)):
            DjangoMiddleware(lambda request: None)
    wrong_record_ip = override_settings(TLYTICS={**django_settings.TLYTICS, "record_ip": "partly"})
    with wrong_record_ip, pytest.raises(ImproperlyConfigured, match="record_ip must be one of full, truncated, none"):
        DjangoMiddleware(lambda request: None)


def test_wrong_record_ip_is_refused_when_the_app_is_built(client: Client) -> None:
    with pytest.raises(ValueError, match="record_ip must be one of"):
        aiohttp_middleware(client, record_ip="all")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "truncated"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("203.0.113.77:51234", "203.0.113.0"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::"),
        ("[2001:db8:abcd:12::1]:443", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),  # an IPv4 client on a dual-stack socket
        ("testclient", None),
        ("", None),
    ],
)
def test_truncated_ip(address: str, truncated: str | None) -> None:
    assert truncated_ip(address) == truncated


def test_is_bot_uses_the_crawler_list() -> None:
    assert is_bot(GOOGLEBOT)
    assert is_bot(
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
    )
    assert not is_bot(BROWSER)
    assert not is_bot(None) and not is_bot("")
    assert is_bot(GOOGLEBOT + " " + "x" * 1000) and not is_bot(BROWSER + " " + "x" * 1000)  # beyond the cache


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


async def test_a_surprising_request_object_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a middleware reads off the framework's objects is read inside the guard too."""
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": 5}  # not (host, port)
    client = Client(Config(server_url="http://127.0.0.1:9", spool_dir=tmp_path / "s"))
    with caplog.at_level("ERROR", logger="tlytics.client.middleware"):
        await ASGIMiddleware(app, client)(scope, receive, send)
    client.close(0.1)
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert "tlytics_middleware_record_failed" in caplog.text


def test_is_bot_matches_only_the_start_of_a_long_user_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Matching costs CPU per character (12 ms for 8 KB of random text, measured): a client
    sending huge random user agents must not make each request of the application that dear.
    A crawler naming itself at the start is still one."""
    from tlytics.client.middleware import bots

    seen_lengths: list[int] = []
    real = bots._matcher()

    def recording(user_agent: str) -> bool:
        seen_lengths.append(len(user_agent))
        return real(user_agent)

    monkeypatch.setattr(bots, "_matcher", lambda: recording)
    assert is_bot(GOOGLEBOT + " " + "x" * 8000) and not is_bot(BROWSER + " " + "y" * 8000)
    assert seen_lengths and max(seen_lengths) <= bots.MATCHED_USER_AGENT_MAX_CHARS


def test_django_records_a_streamed_response_once_its_body_is_sent(
    server: ServerProcess, client: Client, django_settings: Any
) -> None:
    """duration_ms stopped when the view returned, before a StreamingHttpResponse's body was
    produced and sent (and its size was null): now both cover the body."""
    from django.test import Client as DjangoTestClient

    response = DjangoTestClient().get("/stream/")
    assert b"".join(response.streaming_content) == b"first,second,third"  # the test client closes it then
    (stream_event,) = recorded(server, client)
    check_fields(stream_event, "GET", "/stream/", "/stream/", 200, len(b"first,second,third"))
    assert stream_event["duration_ms"] >= 3 * STREAM_PAUSE_S * 1000


async def test_django_records_an_async_streamed_response_once_its_body_is_sent(
    server: ServerProcess, client: Client, django_settings: Any
) -> None:
    from django.test import AsyncClient

    response = await AsyncClient().get("/stream-async/")
    assert b"".join([chunk async for chunk in response.streaming_content]) == b"first,second,third"
    (stream_event,) = recorded(server, client)
    check_fields(stream_event, "GET", "/stream-async/", "/stream-async/", 200, len(b"first,second,third"))
    assert stream_event["duration_ms"] >= 3 * STREAM_PAUSE_S * 1000


def test_flask_records_the_route_of_a_view_that_raises(server: ServerProcess, client: Client) -> None:
    """When Flask lets the view's exception out (testing, debug, PROPAGATE_EXCEPTIONS), no
    response starts: the route was recorded as null."""
    from flask import Flask

    app = Flask(__name__)
    app.testing = True
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, client)  # type: ignore[method-assign]

    @app.route("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        raise RuntimeError("application bug")

    with pytest.raises(RuntimeError, match="application bug"):
        app.test_client().get("/orders/7")
    (order_event,) = recorded(server, client)
    check_fields(order_event, "GET", "/orders/<int:order_id>", "/orders/7", 500, 0)


SKIPPED = ["/health", "/static/*"]
# Paths requested of each framework: only /ok and /healthz are recorded (exact, not a prefix).
REQUESTED = ["/health", "/ok", "/static/app.js", "/healthz"]


async def test_skip_paths_in_every_middleware(
    aiohttp_client: Any, server: ServerProcess, client: Client, django_settings: Any
) -> None:
    from django.test import AsyncClient, override_settings
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from flask import Flask

    aio = web.Application(middlewares=[aiohttp_middleware(client, key="aiohttp", skip_paths=SKIPPED)])
    aio.router.add_get("/{tail:.*}", _ok)
    aio_http = await aiohttp_client(aio)
    for path in REQUESTED:
        assert (await aio_http.get(path)).status == 200

    fast = FastAPI()
    fast.add_middleware(ASGIMiddleware, client=client, key="asgi", skip_paths=SKIPPED)
    fast.add_api_route("/{tail:path}", lambda tail: {"ok": True})
    with TestClient(fast) as fast_http:
        for path in REQUESTED:
            assert fast_http.get(path).status_code == 200

    flask_app = Flask(__name__)
    flask_app.wsgi_app = WSGIMiddleware(flask_app.wsgi_app, client, key="wsgi", skip_paths=SKIPPED)  # type: ignore[method-assign]
    flask_app.add_url_rule("/<path:tail>", "any", lambda tail: "ok")
    for path in REQUESTED:
        flask_app.test_client().get(path).close()

    django_paths = ["/health/", "/ping/", "/stream/"]
    with override_settings(TLYTICS={"client": client, "key": "django", "skip_paths": ["/health/", "/stream*"]}):
        for path in django_paths:
            response = await AsyncClient().get(path)
            assert response.status_code == 200

    for key in ("aiohttp", "asgi", "wsgi"):
        assert [event["path"] for event in recorded(server, client, key)] == ["/healthz", "/ok"], key
    assert [event["path"] for event in recorded(server, client, "django")] == ["/ping/"]


def test_skip_paths_must_be_a_list_of_paths(client: Client) -> None:
    with pytest.raises(ValueError, match="list of paths"):
        aiohttp_middleware(client, skip_paths="/health")
    with pytest.raises(ValueError, match="starting with /"):
        WSGIMiddleware(lambda environ, start_response: [], client, skip_paths=["health"])


def _crawler_list() -> list[dict[str, Any]]:
    from crawleruseragents import CRAWLER_USER_AGENTS_DATA  # type: ignore[import-untyped]

    return CRAWLER_USER_AGENTS_DATA  # type: ignore[no-any-return]


BROWSERS = [
    BROWSER,
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
]


def test_is_bot_matches_exactly_what_the_crawler_list_matches() -> None:
    """One compiled matcher for the whole list, checked against the list's own is_crawler on
    every example user agent the list carries, and variations of them."""
    from crawleruseragents import is_crawler

    from tlytics.client.middleware import bots

    examples = [instance for entry in _crawler_list() for instance in entry.get("instances", [])]
    assert len(examples) > 1000
    variations = [*examples, *BROWSERS]
    variations += [text[3:] for text in examples] + [text.lower() for text in examples]
    variations += [" " + text for text in examples] + [text[: len(text) // 2] for text in examples]
    matcher = bots._matcher()
    disagreements = [text for text in variations if matcher(text) != bool(is_crawler(text))]
    assert disagreements == []


def test_is_bot_is_one_matcher_many_times_cheaper_than_the_lists_loop() -> None:
    """The list's is_crawler runs 60 regexes of 25 patterns for each user agent not seen
    before (120-280 us); the compiled matcher costs a fraction (about 1/11, measured)."""
    import timeit

    from crawleruseragents import is_crawler

    from tlytics.client.middleware import bots

    matcher = bots._matcher()
    unseen = [f"{browser} build/{n}" for browser in BROWSERS for n in range(100)]
    ours = min(timeit.repeat(lambda: [matcher(text) for text in unseen], number=1, repeat=5))
    theirs = min(timeit.repeat(lambda: [is_crawler(text) for text in unseen], number=1, repeat=5))
    assert theirs / ours > 3, f"is_crawler {theirs:.4f}s, one matcher {ours:.4f}s"


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(["bot", "Bot", "crawl", "spider", "curl", " ", "/", "-", "Mozilla/5.0 ", "Google", "x"])
        | st.text(max_size=6),
        max_size=8,
    )
)
def test_is_bot_agrees_with_the_list_on_made_up_user_agents(pieces: list[str]) -> None:
    from crawleruseragents import is_crawler

    from tlytics.client.middleware import bots

    text = "".join(pieces)
    assert bots._matcher()(text) == bool(is_crawler(text))
