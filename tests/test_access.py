"""Access control is deny by default: the test walks every route the router serves, with every
method (HEAD and OPTIONS included), with no key, a wrong key and a key of every scope (write,
stats, read, admin); servers with only some kinds of keys; GET /whoami; percent-encoded paths;
a route added without a level; and the security headers on answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.helpers import app_flush, make_client, spool_count
from tlytics.ingest.auth import ROUTE_ACCESS

WRITE_KEY = "w" * 24
STATS_KEY = "s" * 24
READ_KEY = "r" * 24
ADMIN_KEY = "a" * 24
WRONG_KEY = "x" * 24
CREDENTIALS: dict[str, dict[str, str]] = {
    "no key": {},
    "a wrong key": {"Authorization": f"Bearer {WRONG_KEY}"},
    "the write key": {"Authorization": f"Bearer {WRITE_KEY}"},
    "the stats key": {"Authorization": f"Bearer {STATS_KEY}"},
    "the read key": {"Authorization": f"Bearer {READ_KEY}"},
    "the admin key": {"Authorization": f"Bearer {ADMIN_KEY}"},
}
UNKNOWN = {"no key", "a wrong key"}
# Which credentials each level lets through: admin ⊃ read ⊃ stats for reading; write apart.
ALLOWED = {
    "open": set(CREDENTIALS),
    "write": {"the write key"},
    "stats": {"the stats key", "the read key", "the admin key"},
    "read": {"the read key", "the admin key"},
    "admin": {"the admin key"},
}
# The level the product promises for each (method, route); HEAD always has its GET's level.
PROMISED = {
    ("POST", "/events"): "write",
    ("POST", "/batch"): "write",
    ("GET", "/view"): "read",
    ("GET", "/export"): "read",
    ("GET", "/stats"): "stats",
    ("GET", "/keys"): "stats",
    ("POST", "/lookup"): "read",
    ("GET", "/metrics"): "read",
    ("DELETE", "/events"): "admin",
    ("GET", "/health"): "open",
    ("GET", "/"): "open",
    ("GET", "/openapi.json"): "open",
    ("GET", "/whoami"): "open",
    ("GET", "/static/{name}"): "open",
    ("GET", "/t.js"): "open",
    # Other SDKs' capture APIs (issue 23): write, the key also in the body or a Basic header.
    **{("POST", f"/v1/{kind}"): "write" for kind in ("track", "page", "screen", "identify", "group", "alias")},
    **{("POST", path): "write" for path in ("/v1/batch", "/v1/import", "/capture/", "/batch/", "/e/", "/i/v0/e/")},
}
# Routes other branches add (the funnel) carry the level the design gives them.
PROMISED_IF_PRESENT = {("GET", "/funnel"): "stats"}


@pytest.fixture
async def keyed(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> tuple[Any, web.Application]:
    app = make_app(write_keys=(WRITE_KEY,), stats_keys=(STATS_KEY,), read_keys=(READ_KEY,), admin_keys=(ADMIN_KEY,))
    return await aiohttp_client(app), app


def undeclared_routes(app: web.Application) -> list[str]:
    """Every route the router serves that declared no access level."""
    levels = app[ROUTE_ACCESS]
    return [
        f"{route.method} {route.resource.canonical if route.resource else '?'}"
        for route in app.router.routes()
        if levels.level(route) is None
    ]


def sample_path(route: web.AbstractRoute) -> str:
    """A path that reaches `route`."""
    assert route.resource is not None
    if route.resource.canonical == "/static/{name}":
        return "/static/dashboard.js"
    info = route.resource.get_info()
    assert "path" in info, f"add a sample path for {route.resource!r} to this test"
    return str(info["path"])


async def raw_request(
    port: int, method: str, target: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send `target` byte for byte (no client-side normalization); return status, headers, body."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=10)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = await asyncio.wait_for(reader.read(), timeout=30)  # until the server closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), parsed, body


async def test_every_route_declares_an_access_level(keyed: tuple[Any, web.Application]) -> None:
    _, app = keyed
    assert undeclared_routes(app) == []
    declared = {}
    for route in app.router.routes():
        assert route.resource is not None
        declared[(route.method, route.resource.canonical)] = app[ROUTE_ACCESS].level(route)
    for (method, path), level in PROMISED.items():
        assert declared.get((method, path)) == level, (method, path)
        if method == "GET":
            assert declared.get(("HEAD", path)) == level, ("HEAD", path)
    for (method, path), level in PROMISED_IF_PRESENT.items():
        assert declared.get((method, path), level) == level, (method, path)


async def test_every_route_and_method_with_every_key(keyed: tuple[Any, web.Application]) -> None:
    client, app = keyed
    checked = 0
    for route in app.router.routes():
        level = app[ROUTE_ACCESS].level(route)
        assert level is not None, f"{route.method} {sample_path(route)} has no access level"
        for name, headers in CREDENTIALS.items():
            response = await client.request(
                route.method,
                sample_path(route),
                data=b"[]",
                headers={**headers, "Content-Type": "application/json"},
            )
            what = f"{route.method} {sample_path(route)} with {name} ({level})"
            assert response.status < 500, what
            if name in ALLOWED[level]:
                assert response.status not in (401, 403), what
            elif name in UNKNOWN:
                assert response.status == 401, what
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), what
            else:  # a known key whose scope does not open this route
                assert response.status == 403, what
            if name not in ALLOWED[level] and route.method != "HEAD":
                body = await response.json()
                assert body["needs_scope"] == level, what
                assert f"needs {'an' if level == 'admin' else 'a'} {level} key" in body["error"], what
                assert ADMIN_KEY not in body["error"] and READ_KEY not in body["error"], what
            checked += 1
    assert checked >= 6 * 20  # GET and HEAD of every read route, and the rest


ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def test_every_path_with_every_method_and_every_key(keyed: tuple[Any, web.Application]) -> None:
    """Not only the declared (method, path) pairs: a method a path does not declare is a 405
    whatever the key, and a declared one is let through exactly for the keys its level lists."""
    client, app = keyed
    declared: dict[str, dict[str, str]] = {}
    for route in app.router.routes():
        level = app[ROUTE_ACCESS].level(route)
        assert level is not None
        declared.setdefault(sample_path(route), {})[route.method] = level
    for path, levels in declared.items():
        for method in ALL_METHODS:
            for name, headers in CREDENTIALS.items():
                response = await client.request(
                    method, path, data=b"[]", headers={**headers, "Content-Type": "application/json"}
                )
                what = f"{method} {path} with {name}"
                if method not in levels:
                    assert response.status == 405, what
                elif name in ALLOWED[levels[method]]:
                    assert response.status not in (401, 403, 405) and response.status < 500, what
                else:
                    assert response.status == (401 if name in UNKNOWN else 403), what


async def test_options_answers_nothing_on_any_path(keyed: tuple[Any, web.Application]) -> None:
    client, app = keyed
    for route in app.router.routes():
        for headers in CREDENTIALS.values():
            response = await client.options(sample_path(route), headers=headers)
            assert response.status == 405, sample_path(route)
            assert set(await response.json()) == {"error"}
    assert (await client.options("/no-such-path")).status == 404


async def test_head_without_the_right_key_reveals_nothing(keyed: tuple[Any, web.Application]) -> None:
    client, app = keyed
    write = CREDENTIALS["the write key"]
    stats = CREDENTIALS["the stats key"]
    stored = [{"key": "signup", "data": {"email": "alice@example.com", "pad": "x" * 500}}]
    assert (await client.post("/events", json=stored, headers=write)).status == 200
    await app_flush(app)
    refused = [CREDENTIALS["no key"], CREDENTIALS["a wrong key"], write]
    for path in ("/view", "/export", "/keys", "/stats", "/metrics"):
        unauthorized = await client.get(path + "?where=data.email:nobody@example.com")
        assert unauthorized.status == 401
        # A stats key opens the aggregates, never the raw events.
        for headers in refused + ([stats] if path in ("/view", "/export", "/metrics") else []):
            statuses, lengths = set(), set()
            for email in ("alice@example.com", "nobody@example.com"):
                head = await client.head(f"{path}?where=data.email:{email}", headers=headers)
                assert await head.read() == b""
                statuses.add(head.status)
                lengths.add(head.headers["Content-Length"])
            # HEAD is the same refusal, whether alice exists or not.
            assert len(lengths) == 1 and statuses <= {401, 403}, (path, headers, statuses)
            assert statuses == ({403} if headers in (write, stats) else {401}), (path, statuses)
        no_key_head = await client.head(f"{path}?where=data.email:alice@example.com")
        assert no_key_head.headers["Content-Length"] == unauthorized.headers["Content-Length"], path
    head = await client.head("/view?where=data.email:alice@example.com", headers=CREDENTIALS["the read key"])
    assert head.status == 200


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/%76iew"),
        ("HEAD", "/%76iew"),
        ("GET", "/%76%69%65%77?page_size=1000"),
        ("GET", "/%65xport?format=ndjson"),
        ("GET", "/%6Beys"),
        ("HEAD", "/%73tats"),
        ("GET", "/%6detrics"),
        ("GET", "/view/"),
        ("GET", "/VIEW"),
        ("GET", "//view"),
        ("GET", "/./view"),
        ("GET", "/static/../view"),
        ("GET", "/static/%2e%2e/view"),
        ("GET", "http://127.0.0.1/view"),
    ],
)
async def test_encoded_and_odd_paths_are_refused_without_a_key(
    keyed: tuple[Any, web.Application], method: str, target: str
) -> None:
    client, _ = keyed
    status, headers, body = await raw_request(client.port, method, target)
    assert status in (401, 404), (target, status, body)
    assert headers["content-type"].startswith("application/json")
    status, _, _ = await raw_request(client.port, method, target, CREDENTIALS["the write key"])
    assert status in (403, 404), target


async def test_write_routes_refuse_encoded_paths_without_the_write_key(keyed: tuple[Any, web.Application]) -> None:
    client, app = keyed
    for target in ("/%65vents", "/b%61tch"):
        for credentials in ("the read key", "the admin key"):
            status, _, body = await raw_request(client.port, "POST", target, CREDENTIALS[credentials])
            assert status == 403, (target, body)
        status, _, body = await raw_request(client.port, "POST", target)
        assert status == 401, (target, body)
    assert spool_count(app) == 0


async def test_a_route_without_a_level_is_refused_for_every_method(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    app = make_app()
    calls = []

    async def forgotten(request: web.Request) -> web.Response:
        calls.append(request.method)
        return web.json_response({"secret": 42})

    app.router.add_get("/forgotten", forgotten)  # no access=: a programming error
    app.router.add_post("/forgotten", forgotten)
    assert sorted(undeclared_routes(app)) == ["GET /forgotten", "HEAD /forgotten", "POST /forgotten"]
    client = await aiohttp_client(app)
    with capture_logs() as logs:
        for method in ("GET", "HEAD", "POST"):
            response = await client.request(method, "/forgotten")
            assert response.status == 403, method
            if method != "HEAD":
                assert "no declared access level" in (await response.json())["error"]
    assert calls == []
    assert [log["route"] for log in logs if log["event"] == "route_without_access_level"] == [
        "GET /forgotten",
        "HEAD /forgotten",
        "POST /forgotten",
    ]


async def test_unmatched_requests_keep_their_json_404_and_405(keyed: tuple[Any, web.Application]) -> None:
    client, _ = keyed
    missing = await client.get("/no-such-endpoint")
    assert missing.status == 404
    assert "no such endpoint" in (await missing.json())["error"]
    wrong_method = await client.put("/view")
    assert wrong_method.status == 405
    assert set(wrong_method.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert "not allowed" in (await wrong_method.json())["error"]


async def test_rejected_ingest_is_counted_by_the_route_level(keyed: tuple[Any, web.Application]) -> None:
    client, _ = keyed
    read = CREDENTIALS["the read key"]
    await client.post("/events", json=[{"key": "a"}])  # write route, no key: a rejected ingest
    await client.get("/view")  # read route, no key: not an ingest
    await client.head("/keys")
    metrics = await (await client.get("/metrics", headers=read)).text()
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert figures['tlytics_requests_rejected_total{reason="unauthorized"}'] == 1


async def test_every_answer_carries_the_security_headers(keyed: tuple[Any, web.Application]) -> None:
    client, app = keyed
    answers = [await client.request(route.method, sample_path(route)) for route in app.router.routes()]
    answers += [
        await client.get("/no-such-endpoint"),
        await client.put("/view"),
        await client.options("/"),
        await client.get("/static/no-such-file.js"),
        await client.post(
            "/events", data=b"[", headers={**CREDENTIALS["the write key"], "Content-Type": "application/json"}
        ),
    ]
    for response in answers:
        where = f"{response.method} {response.url.path} {response.status}"
        assert response.headers["X-Content-Type-Options"] == "nosniff", where
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], where
        assert response.headers["X-Frame-Options"] == "DENY", where
    dashboard = await client.get("/")
    policy = dict(part.strip().partition(" ")[::2] for part in dashboard.headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert "'unsafe-inline'" not in dashboard.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        # A server set up before scopes (read keys only): reading needs the read key as
        # before, but the read key no longer erases, and nobody does until an admin key exists.
        (
            {"read_keys": (READ_KEY,)},
            {
                ("GET", "/stats", "the read key"): 200,
                ("GET", "/view", "the read key"): 200,
                ("GET", "/view", "no key"): 401,
                ("DELETE", "/events", "the read key"): 403,
                ("DELETE", "/events", "no key"): 401,
                ("POST", "/events", "no key"): 200,  # no write keys: posting stays open
            },
        ),
        # A stats key alone (a shared dashboard): every reading route now needs a key.
        (
            {"stats_keys": (STATS_KEY,)},
            {
                ("GET", "/stats", "the stats key"): 200,
                ("GET", "/keys", "the stats key"): 200,
                ("GET", "/stats", "no key"): 401,
                ("GET", "/view", "no key"): 401,
                ("GET", "/view", "the stats key"): 403,
                ("GET", "/export", "the stats key"): 403,
                ("DELETE", "/events", "the stats key"): 403,
            },
        ),
        # No keys at all: everything is open, as on a laptop.
        (
            {},
            {
                ("GET", "/view", "no key"): 200,
                ("GET", "/view", "a wrong key"): 200,
                ("DELETE", "/events", "no key"): 200,
                ("POST", "/events", "no key"): 200,
            },
        ),
    ],
)
async def test_a_scope_without_keys_is_open_only_while_its_kind_has_none(
    aiohttp_client: Any,
    make_app: Callable[..., web.Application],
    keys: dict[str, tuple[str, ...]],
    expected: dict[tuple[str, str, str], int],
) -> None:
    client = await aiohttp_client(make_app(**keys))
    for (method, path, credentials), status in expected.items():
        query = "?key=nothing" if method == "DELETE" else ""
        body = b"[]" if method == "POST" else None
        response = await client.request(
            method,
            path + query,
            data=body,
            headers={**CREDENTIALS[credentials], "Content-Type": "application/json"},
        )
        assert response.status == status, (method, path, credentials, await response.text())


async def test_whoami_says_what_the_presented_key_may_do(keyed: tuple[Any, web.Application]) -> None:
    client, _ = keyed
    expected = {
        "no key": (None, None, []),
        "a wrong key": (None, None, []),
        "the write key": ("write", "--write-key #1", ["write"]),
        "the stats key": ("stats", "--stats-key #1", ["stats"]),
        "the read key": ("read", "--read-key #1", ["stats", "read"]),
        "the admin key": ("admin", "--admin-key #1", ["stats", "read", "admin"]),
    }
    for name, (scope, label, allowed) in expected.items():
        response = await client.get("/whoami", headers=CREDENTIALS[name])
        assert response.status == 200, name
        assert await response.json() == {"scope": scope, "label": label, "allowed": allowed}, name


async def test_whoami_on_a_server_without_keys_allows_everything(client: Any) -> None:
    answer = await (await client.get("/whoami", headers={"Authorization": f"Bearer {WRONG_KEY}"})).json()
    assert answer == {"scope": None, "label": None, "allowed": ["write", "stats", "read", "admin"]}


async def test_a_token_that_is_not_utf8_is_an_unknown_key(keyed: tuple[Any, web.Application]) -> None:
    """Header bytes that are not UTF-8 (a garbled client, a key sent as latin-1) are a 401 on
    a keyed route and an unknown key on /whoami, not a 500."""
    client, _ = keyed

    async def answer_with(token: bytes, target: str) -> tuple[int, bytes]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", client.port), timeout=10)
        try:
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
                + b"Authorization: Bearer "
                + token
                + b"\r\n\r\n"
            )
            answer = await asyncio.wait_for(reader.read(), timeout=30)
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    for token in (b"\xc3\xa9\xff\xfe" + b"x" * 20, READ_KEY.encode() + b"\xe9"):
        assert (await answer_with(token, "/view"))[0] == 401, token
        status, body = await answer_with(token, "/whoami")
        assert status == 200 and b'"scope":null' in body.replace(b" ", b""), (token, body)
    assert (await answer_with(READ_KEY.encode(), "/view"))[0] == 200


async def test_a_missing_static_file_is_a_json_404_logged_as_such(keyed: tuple[Any, web.Application]) -> None:
    """aiohttp's static route answered a missing file with an empty octet-stream 404 that the
    request log (and the metrics) recorded as a 200. The dashboard's files are still served,
    HEAD included, and nothing outside their directory is reachable."""
    client, _ = keyed
    with capture_logs() as logs:
        missing = await client.get("/static/no-such-file.js")
    assert missing.status == 404 and (await missing.json())["error"] == "no such file: /static/no-such-file.js"
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["status"] == 404
    for target in ("/static/%ff", "/static/..%2fopenapi.json", "/static/.", "/static/"):
        assert (await client.get(target)).status == 404, target
    script = await client.get("/static/dashboard.js")
    assert script.status == 200 and "javascript" in script.headers["Content-Type"]
    assert (await client.head("/static/dashboard.css")).status == 200
    assert (await client.get("/static/dashboard.js", headers={"If-None-Match": script.headers["ETag"]})).status == 304


async def test_write_and_read_keys_are_separate(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    client, app = await make_client(aiohttp_client, make_app, write_keys=(WRITE_KEY,), read_keys=(READ_KEY,))
    write = {"Authorization": f"Bearer {WRITE_KEY}"}
    read = {"Authorization": f"Bearer {READ_KEY}"}
    events = [{"key": "a"}]

    missing = await client.post("/events", json=events)
    assert missing.status == 401
    assert "write key" in (await missing.json())["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.post("/events", json=events, headers={"Authorization": "Bearer nope"})).status == 401
    assert (await client.post("/batch", json={"events": events}, headers=read)).status == 403  # a read key never writes
    assert spool_count(app) == 0
    assert (await client.post("/events", json=events, headers=write)).status == 200
    assert (
        await client.post("/batch", json={"events": events}, headers={"Authorization": f"bearer {WRITE_KEY}"})
    ).status == 200

    assert (await client.get("/view")).status == 401
    assert (await client.get("/view", headers=write)).status == 403  # a write key never reads
    assert (await client.get("/view", headers=read)).status == 200
    assert (await client.get("/export", headers=write)).status == 403
    assert (await client.get("/export", headers=read)).status == 200
    assert (await client.post("/lookup", json={"ids": []}, headers=write)).status == 403
    assert (await client.get("/metrics", headers=write)).status == 403
    assert (await client.get("/metrics", headers=read)).status == 200
    assert (await client.get("/health")).status == 200  # stays open


async def test_keys_are_never_logged(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    client, _ = await make_client(aiohttp_client, make_app, write_keys=(WRITE_KEY,))
    with capture_logs() as logs:
        await client.post("/events", json=[{"key": "a"}], headers={"Authorization": f"Bearer {WRITE_KEY}"})
        await client.post("/events", json=[{"key": "a"}], headers={"Authorization": "Bearer wrong-key-0123456789"})
    assert logs
    assert WRITE_KEY not in repr(logs) and "wrong-key" not in repr(logs)


async def test_open_server_on_a_public_address_warns(make_app: Callable[..., web.Application]) -> None:
    from aiohttp.test_utils import TestServer

    app = make_app(host="0.0.0.0")
    with capture_logs() as logs:
        async with TestServer(app):
            pass
    assert {"no_write_keys", "no_read_keys"} <= {log["event"] for log in logs}
