"""Live answers against openapi.json, field by field: every JSON answer of the main routes (each
success, and the refusals 400, 401, 403, 413, 429, 503) fits the schema the document gives for
its status, and carries no field the document does not name (see `openapi_spec._strict`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.helpers import app_flush
from tests.openapi_spec import SPEC, answer_problems, resolve, schema_problems, strict_schema
from tests.test_openapi_complete import EVENT, PROBES
from tlytics.errors import SpoolError
from tlytics.ingest.routes import ROUTES
from tlytics.ingest.state import SPOOL
from tlytics.rate import parse_rate

KEYS = {
    "write": "w-key-0123456789",
    "stats": "s-key-0123456789",
    "read": "r-key-0123456789",
    "admin": "a-key-0123456789",
}
# A scope that does not open each level, for its 403.
WRONG_SCOPE = {"write": "read", "stats": "write", "read": "stats", "admin": "read"}
JSON_TYPES = ("application/json",)


async def _problems(response: Any, method: str, path: str) -> list[str]:
    if response.content_type not in JSON_TYPES:
        return []
    return answer_problems(method, path, response.status, await response.json())


async def test_every_successful_json_answer_fits_its_schema(client: Any, app: web.Application) -> None:
    await client.post("/events", json=[EVENT, {**EVENT, "key": "pay"}])
    await app_flush(app)
    problems: list[str] = []
    checked = 0
    for (method, path), (url, body) in PROBES.items():
        response = await client.request(method, url, json=body)
        assert response.status == 200, (method, url, await response.text())
        problems += await _problems(response, method, path)
        checked += response.content_type in JSON_TYPES
    # More answers: a filtered page, a cursor page, stats without options, a lookup that finds.
    for url in (
        "/view?page_size=1&where=data.plan:pro",
        "/view?order=asc&page_size=1",
        "/stats",
        "/stats?unique=data.user",
    ):
        response = await client.get(url)
        assert response.status == 200, (url, await response.text())
        problems += await _problems(response, "GET", url.partition("?")[0])
        checked += 1
    assert checked >= 20
    assert not problems, "\n".join(problems)


async def test_each_exported_line_is_a_documented_stored_event(client: Any, app: web.Application) -> None:
    await client.post("/events", json=[EVENT, {**EVENT, "id": None, "timestamp": "2026-01-01T00:00:00+02:00"}])
    await app_flush(app)
    response = await client.get("/export")
    assert response.status == 200
    assert "application/x-ndjson" in SPEC["paths"]["/export"]["get"]["responses"]["200"]["content"]
    schema = strict_schema(resolve(SPEC["components"]["schemas"]["StoredEvent"]))
    lines = (await response.read()).splitlines()
    assert len(lines) == 2
    problems = [problem for line in lines for problem in schema_problems(schema, orjson.loads(line))]
    assert not problems, problems


# One refused request per route that checks what it is given, each with the field it names.
BAD_REQUESTS: list[tuple[str, str, str, Any]] = [
    ("POST", "/events", "/events", [{"key": ""}]),
    ("POST", "/events", "/events", b"[{"),
    ("DELETE", "/events", "/events", None),
    ("POST", "/batch", "/batch", {"events": 1}),
    ("GET", "/view", "/view?order=sideways", None),
    ("GET", "/view", "/view?cursor=nonsense", None),
    ("GET", "/export", "/export?format=xml", None),
    ("GET", "/stats", "/stats?interval=fortnight", None),
    ("GET", "/stats", "/stats?where=nonsense", None),
    ("GET", "/funnel", "/funnel?steps=a", None),
    ("GET", "/funnel", "/funnel?steps=a&by=data.u&key=x", None),
    ("POST", "/lookup", "/lookup", {"ids": ["not-a-uuid"]}),
    ("POST", "/v1/track", "/v1/track", {"userId": "u1"}),
    ("POST", "/v1/batch", "/v1/batch", {"batch": 1}),
    ("POST", "/capture/", "/capture/", {"event": "e"}),
    ("POST", "/batch/", "/batch/", {"batch": 1}),
]


@pytest.mark.parametrize(
    ("method", "path", "url", "body"), BAD_REQUESTS, ids=[f"{m} {u}" for m, _, u, _b in BAD_REQUESTS]
)
async def test_each_400_fits_its_schema(client: Any, method: str, path: str, url: str, body: Any) -> None:
    if isinstance(body, bytes):
        response = await client.request(method, url, data=body, headers={"Content-Type": "application/json"})
    else:
        response = await client.request(method, url, json=body)
    assert response.status == 400, await response.text()
    assert not await _problems(response, method, path)


async def test_each_key_refusal_fits_its_schema(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    client = await aiohttp_client(make_app(**{f"{scope}_keys": (key,) for scope, key in KEYS.items()}))
    problems: list[str] = []
    keyed = [route for route in ROUTES if route.access != "open"]
    for route in keyed:
        url, body = PROBES[(route.method, route.path)]
        anonymous = await client.request(route.method, url, json=body)
        wrong = await client.request(
            route.method, url, json=body, headers={"Authorization": f"Bearer {KEYS[WRONG_SCOPE[route.access]]}"}
        )
        assert (anonymous.status, wrong.status) == (401, 403), (route.method, route.path)
        problems += await _problems(anonymous, route.method, route.path)
        problems += await _problems(wrong, route.method, route.path)
    assert len(keyed) >= 20
    assert not problems, "\n".join(problems)


async def test_413_429_and_503_fit_their_schemas(
    aiohttp_client: Any, make_app: Callable[..., web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(
        max_events_per_request=1, rate_limit=parse_rate("1/h,burst=6"), read_rate_limit=parse_rate("1/h,burst=1")
    )
    client = await aiohttp_client(app)
    problems: list[str] = []
    for method, path, body in [
        ("POST", "/events", [EVENT, EVENT]),
        ("POST", "/batch", {"events": [EVENT, EVENT]}),
        ("POST", "/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "e"}] * 2}),
        ("POST", "/batch/", {"batch": [{"event": "e", "distinct_id": "u"}] * 2}),
    ]:
        response = await client.request(method, path, json=body)
        assert response.status == 413, (path, await response.text())
        problems += await _problems(response, method, path)

    def broken(values: Any) -> Any:
        raise SpoolError("disk I/O error (injected)")

    monkeypatch.setattr(app[SPOOL], "append_many", broken)
    for path, body in [("/events", [EVENT]), ("/v1/track", {"userId": "u", "event": "e"})]:
        response = await client.post(path, json=body)
        assert response.status == 503, (path, await response.text())
        problems += await _problems(response, "POST", path)
    statuses = []
    for _ in range(10):  # the write budget (6) is spent within these
        response = await client.post("/events", json=[EVENT])
        statuses.append(response.status)
        if response.status == 429:
            problems += await _problems(response, "POST", "/events")
            break
    assert statuses[-1] == 429, statuses
    for url in ("/view", "/view"):  # a read budget of one
        response = await client.get(url)
    assert response.status == 429
    problems += await _problems(response, "GET", "/view")
    assert not problems, "\n".join(problems)


async def test_an_unhealthy_health_answer_fits_its_schema(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app(spool_max_bytes=64 * 1024))
    statuses, health_statuses = [], []
    problems: list[str] = []
    # The spool fills within a few posts. The writer may drain it between the refused post and
    # /health (a backlog wakes it): then /health is healthy again, and the spool is filled again.
    for _ in range(200):
        response = await client.post("/events", json=[{"key": "fill", "data": {"pad": "x" * 4000}}] * 5)
        statuses.append(response.status)
        if response.status != 503:
            continue
        problems = await _problems(response, "POST", "/events")
        health = await client.get("/health")
        health_statuses.append(health.status)
        if health.status == 503:
            break
    assert 503 in statuses, statuses
    assert health_statuses and health_statuses[-1] == 503, (statuses, health_statuses)
    problems += await _problems(health, "GET", "/health")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", ["/events", "/batch", "/lookup", "/v1/track", "/capture/"])
async def test_a_415_fits_its_schema(client: Any, path: str) -> None:
    response = await client.post(path, data=b"{}", headers={"Content-Type": "application/xml"})
    assert response.status == 415, await response.text()
    assert not await _problems(response, "POST", path)
