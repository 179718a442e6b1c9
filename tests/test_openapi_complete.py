"""openapi.json checked field by field against the code it documents, so a route, a query
parameter, an access level or a request field cannot be added without it:

- the route table (`routes.ROUTES`) and the document list the same operations, each with the
  route's scope, its security schemes and the answers a key check gives;
- each operation documents exactly the query parameters its route declares (`Route.query`),
  and each handler reads exactly those (recorded on a live server), so a handler that starts
  reading a new parameter fails here until the route declares it, and then until the document
  has it.

Request bodies are checked in test_openapi_bodies.py, answers in test_openapi_answers.py.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import MultiDictProxy

import tlytics.ingest
from tests.helpers import app_flush
from tests.openapi_spec import operations, query_parameters
from tlytics.ingest.routes import ROUTES, Route

# Served, but not API: the dashboard's scripts and styles.
UNDOCUMENTED = {("GET", "/static/{name}")}
DOCUMENTED_ROUTES = {
    (route.method, route.path): route for route in ROUTES if (route.method, route.path) not in UNDOCUMENTED
}
KEY_CHECK_ANSWERS = {"401", "403", "429"}


def test_the_document_lists_every_route_and_nothing_else() -> None:
    documented = set(operations())
    missing = sorted(set(DOCUMENTED_ROUTES) - documented)
    extra = sorted(documented - set(DOCUMENTED_ROUTES))
    assert not missing, f"routes.py has routes openapi.json does not document: {missing}"
    assert not extra, f"openapi.json documents operations routes.py does not have: {extra}"


def _access_problems(route: Route, operation: dict[str, Any]) -> Iterator[str]:
    where = f"openapi.json {route.method} {route.path}"
    scope, security = operation.get("x-scope"), operation.get("security")
    if route.access == "open":
        if scope not in (None, "open"):
            yield f"{where}: x-scope is {scope!r}, the route is open"
        if security is not None and {} not in security:
            yield f"{where}: security needs no key on an open route: it must list {{}}"
        return
    if scope != route.access:
        yield f"{where}: x-scope is {scope!r}, routes.py declares {route.access!r}"
    # {}: no key is needed until keys of the route's kind are configured.
    expected: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]
    if route.key_in_body:
        expected.append({"segmentBasic": []})
    if security != expected:
        yield f"{where}: security is {security}, the route takes {expected}"
    for status in sorted(KEY_CHECK_ANSWERS - set(operation["responses"])):
        yield f"{where}: the answer {status} of the key check is not documented"


def test_each_operation_has_the_access_level_its_route_declares() -> None:
    documented = operations()
    problems = [
        problem
        for key, route in DOCUMENTED_ROUTES.items()
        if key in documented
        for problem in _access_problems(route, documented[key])
    ]
    assert not problems, "\n".join(problems)


def test_each_operation_documents_exactly_the_query_parameters_its_route_declares() -> None:
    documented = operations()
    problems = []
    for (method, path), route in DOCUMENTED_ROUTES.items():
        if (method, path) not in documented:
            continue  # the listing test names it
        names = query_parameters(documented[(method, path)], path)
        problems += [
            f"openapi.json {method} {path}: query parameter {name!r} is missing (routes.py declares it)"
            for name in sorted(set(route.query) - names)
        ]
        problems += [
            f"openapi.json {method} {path}: documents query parameter {name!r}, which routes.py does not declare"
            for name in sorted(names - set(route.query))
        ]
    assert not problems, "\n".join(problems)


def test_route_declarations_name_each_parameter_once() -> None:
    repeated = {
        f"{route.method} {route.path}": route.query for route in ROUTES if len(set(route.query)) != len(route.query)
    }
    assert not repeated, repeated


# ---- what the handlers really read ------------------------------------------------------------


@dataclass
class RecordingQuery:
    """A request's query parameters that note each name a handler asks for."""

    query: MultiDictProxy[str]
    names: set[str] = field(default_factory=set)

    def get(self, name: str, default: Any = None) -> Any:
        self.names.add(name)
        return self.query.get(name, default)

    def getall(self, name: str, *default: Any) -> Any:
        self.names.add(name)
        return self.query.getall(name, *default)

    def getone(self, name: str, *default: Any) -> Any:
        self.names.add(name)
        return self.query.getone(name, *default)

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        return self.query[name]

    def __contains__(self, name: object) -> bool:
        self.names.add(str(name))
        return name in self.query

    def __iter__(self) -> Iterator[str]:
        # A handler walking every parameter reads names no declaration can list.
        self.names.add("<every parameter>")
        return iter(self.query)

    def keys(self) -> Any:
        self.names.add("<every parameter>")
        return self.query.keys()

    def items(self) -> Any:
        self.names.add("<every parameter>")
        return self.query.items()

    def __len__(self) -> int:
        self.names.add("<every parameter>")
        return len(self.query)


@pytest.fixture
def query_reads(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], set[str]]:
    """(method, route path) → the query parameters its handler asked for, on this test's app."""
    reads: dict[tuple[str, str], set[str]] = defaultdict(set)

    def recording_query(request: web.BaseRequest) -> RecordingQuery:
        resource = request.match_info.route.resource if isinstance(request, web.Request) else None
        path = resource.canonical if resource is not None else request.path
        return RecordingQuery(request.rel_url.query, reads[(request.method, path)])

    monkeypatch.setattr(web.BaseRequest, "query", property(recording_query))
    return reads


EVENT = {"key": "signup", "data": {"user": "u1", "plan": "pro"}}
# One ordinary, successful request per route (GET /stats asks everything optional, so each
# parameter the handler reads only in some answers is read here too).
PROBES: dict[tuple[str, str], tuple[str, Any]] = {
    ("POST", "/events"): ("/events", [EVENT]),
    ("DELETE", "/events"): ("/events?key=nothing-here", None),
    ("POST", "/batch"): ("/batch", {"events": [EVENT]}),
    ("GET", "/health"): ("/health", None),
    ("GET", "/view"): ("/view", None),
    ("GET", "/export"): ("/export", None),
    ("GET", "/stats"): ("/stats?unique=data.user&breakdown=data.plan&compare=previous", None),
    ("GET", "/keys"): ("/keys", None),
    ("GET", "/funnel"): ("/funnel?steps=signup,pay&by=data.user&within=7d", None),
    ("GET", "/"): ("/", None),
    ("POST", "/lookup"): ("/lookup", {"ids": []}),
    ("GET", "/metrics"): ("/metrics", None),
    ("GET", "/openapi.json"): ("/openapi.json", None),
    ("GET", "/whoami"): ("/whoami", None),
    ("GET", "/static/{name}"): ("/static/dashboard.js", None),
    ("GET", "/t.js"): ("/t.js", None),
    ("POST", "/v1/track"): ("/v1/track", {"userId": "u1", "event": "signup"}),
    ("POST", "/v1/page"): ("/v1/page", {"userId": "u1", "name": "Home"}),
    ("POST", "/v1/screen"): ("/v1/screen", {"userId": "u1", "name": "Home"}),
    ("POST", "/v1/identify"): ("/v1/identify", {"userId": "u1", "traits": {"plan": "pro"}}),
    ("POST", "/v1/group"): ("/v1/group", {"userId": "u1", "groupId": "g1"}),
    ("POST", "/v1/alias"): ("/v1/alias", {"userId": "u1", "previousId": "a1"}),
    ("POST", "/v1/batch"): ("/v1/batch", {"batch": [{"type": "track", "userId": "u1", "event": "signup"}]}),
    ("POST", "/v1/import"): ("/v1/import", {"batch": [{"type": "track", "userId": "u1", "event": "signup"}]}),
    # Without sent_at, where posthog-js's `_` is read.
    ("POST", "/capture/"): ("/capture/", {"event": "signup", "distinct_id": "u1", "timestamp": "2026-01-01T00:00:00Z"}),
    ("POST", "/batch/"): ("/batch/", {"batch": [{"event": "signup", "distinct_id": "u1"}]}),
    ("POST", "/e/"): ("/e/", [{"event": "signup", "distinct_id": "u1"}]),
    ("POST", "/i/v0/e/"): ("/i/v0/e/", {"event": "signup", "distinct_id": "u1"}),
}


# Read by the shared parsing (`query.read_query`) but not taken by the route, so left out of its
# declaration and of openapi.json: a wrong value is still a 400, a right one has no effect.
CHECKED_NOT_TAKEN = {
    ("DELETE", "/events"): {"order", "cursor"},
    ("GET", "/stats"): {"order", "cursor"},
    # `key` is read to refuse it: the steps are the keys a funnel reads.
    ("GET", "/funnel"): {"order", "cursor", "key"},
}


def test_every_route_has_a_probe() -> None:
    routes = {(route.method, route.path) for route in ROUTES}
    assert set(PROBES) == routes, f"give these routes a request in PROBES: {sorted(routes - set(PROBES))}"


async def test_each_handler_reads_exactly_the_query_parameters_its_route_declares(
    client: Any, query_reads: dict[tuple[str, str], set[str]]
) -> None:
    problems = []
    for route in ROUTES:
        url, body = PROBES[(route.method, route.path)]
        response = await client.request(route.method, url, json=body)
        assert response.status == 200, (route.method, url, await response.text())
        read = query_reads[(route.method, route.path)] - CHECKED_NOT_TAKEN.get((route.method, route.path), set())
        declared = set(route.query)
        problems += [
            f"{route.method} {route.path}: the handler reads {name!r}: declare it in the route's query= (routes.py)"
            for name in sorted(read - declared)
        ]
        problems += [
            f"{route.method} {route.path}: routes.py declares {name!r}, which the handler never read"
            for name in sorted(declared - read)
        ]
    assert not problems, "\n".join(problems)


_ACCESS = {(route.method, route.path): route.access for route in ROUTES}


@pytest.mark.parametrize(
    "method_path", [key for key in PROBES if key[0] == "GET" and _ACCESS[key] in ("open", "write")], ids=" ".join
)
async def test_an_open_route_ignores_a_parameter_it_does_not_take(client: Any, method_path: tuple[str, str]) -> None:
    """Pages, scripts and /health: browsers, SDKs and health checkers add parameters of their
    own (cache busters): the answer is the one without it."""
    url, _ = PROBES[method_path]
    plain = await client.get(url)
    with_unknown = await client.get(url + ("&" if "?" in url else "?") + "no_such_parameter=1")
    assert (with_unknown.status, with_unknown.content_type) == (plain.status, plain.content_type)


@pytest.mark.parametrize("method_path", [key for key in PROBES if _ACCESS[key] not in ("open", "write")], ids=" ".join)
async def test_a_question_about_the_data_refuses_a_parameter_it_does_not_take(
    client: Any, app: web.Application, method_path: tuple[str, str]
) -> None:
    """A misspelt filter must not answer (or erase) as if it were not there: 400 naming it, and
    nothing erased."""
    url, body = PROBES[method_path]
    assert (await client.post("/events", json=[EVENT])).status == 200
    await app_flush(app)
    if method_path == ("DELETE", "/events"):
        url = "/events?key=signup"  # would erase the event just sent, were `sinse` not there
    before = (await (await client.get("/view?page_size=1")).json())["total"]
    assert before > 0
    misspelt = url + ("&" if "?" in url else "?") + "sinse=2099-01-01T00:00:00Z"
    response = await client.request(method_path[0], misspelt, json=body)
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["field"] == "sinse" and "unknown query parameter 'sinse'" in answer["error"], answer
    assert (await (await client.get("/view?page_size=1")).json())["total"] == before


def _literal_query_reads(source: str) -> set[str]:
    """The names a module reads as `<x>.query.get("name")`, `.getall`, `.getone` or
    `<x>.query["name"]` (a name passed in a variable is the live test's to find)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            owner, name = node.func.value, node.args[0]
            is_read = node.func.attr in ("get", "getall", "getone")
        elif isinstance(node, ast.Subscript):
            owner, name, is_read = node.value, node.slice, True
        else:
            continue
        if is_read and isinstance(owner, ast.Attribute) and owner.attr == "query" and isinstance(name, ast.Constant):
            names.add(str(name.value))
    return names


def test_every_parameter_named_in_the_server_code_is_declared_by_some_route() -> None:
    """Also the reads in branches the live probes do not take."""
    declared = {name for route in ROUTES for name in route.query}
    declared |= {name for names in CHECKED_NOT_TAKEN.values() for name in names}
    package = Path(tlytics.ingest.__file__).parent
    undeclared = {
        f"{module.name}: {name!r}"
        for module in package.glob("*.py")
        for name in _literal_query_reads(module.read_text())
        if name not in declared
    }
    assert _literal_query_reads('request.query.get("format", "ndjson")') == {"format"}  # the finder works
    assert not undeclared, f"read from the query but declared by no route (routes.py query=): {sorted(undeclared)}"
