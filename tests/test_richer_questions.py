"""Issue 14, part 3 on a real server (pytest-aiohttp on a loopback socket), on both stores:
where operators on every read and on erasure, /stats' unique_total and compare=previous, and
GET /funnel; malformed parameters are 400s naming the parameter."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import app_flush
from tests.postgres_cluster import PostgresCluster
from tlytics.ingest import Settings, create_app

DAY = "2025-03-0{}T{:02d}:00:00Z"


def ev(key: str, day: int, hour: int, **data: Any) -> dict[str, Any]:
    return {"key": key, "timestamp": DAY.format(day, hour), "data": data}


# Week 1 (Mar 1-3) and week 2 (Mar 4-6, the compared period).
EVENTS = [
    ev("signup", 1, 9, user="u1", plan="Free", n=1),
    ev("signup", 1, 10, user="u2", plan="Pro Yearly", n=20),
    ev("activate", 2, 9, user="u1", n=5.5),
    ev("signup", 4, 9, user="u3", plan="pro", n=11),
    ev("activate", 4, 12, user="u3", n="12"),  # a string: never compared as a number
    ev("purchase", 5, 9, user="u3", n=100),
    ev("activate", 5, 10, user="u1", n=None),
    ev("signup", 6, 9, user="u4"),
    ev("purchase", 6, 10, user="u2", n=True),
]


@pytest.fixture(params=["sqlite", "postgresql"])
async def server(request: pytest.FixtureRequest, aiohttp_client: Any, settings: Settings) -> AsyncIterator[Any]:
    """A server on the store named by the parameter, holding EVENTS."""
    cluster: PostgresCluster | None = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        name = f"questions_{uuid.uuid4().hex[:12]}"
        settings = dataclasses.replace(
            settings, spool_dir=settings.db_path.with_suffix(".spool"), store_url=cluster.create_database(name)
        )
    app: web.Application = create_app(settings)
    client = await aiohttp_client(app)
    assert (await client.post("/events", json=EVENTS)).status == 200
    await app_flush(app)
    yield client
    await client.close()
    if cluster is not None:
        cluster.drop_database(name)


async def get(client: Any, path: str, params: list[tuple[str, str]]) -> Any:
    response = await client.get(path, params=params)
    assert response.status == 200, await response.text()
    return await response.json()


async def viewed(client: Any, *where: str) -> list[str]:
    body = await get(client, "/view", [("order", "asc"), ("page_size", "100"), *(("where", w) for w in where)])
    return [f"{e['key']}:{e['data'].get('user')}" for e in body["events"]]


async def test_where_operators_on_view_export_and_stats(server: Any) -> None:
    assert await viewed(server, "data.n>10") == ["signup:u2", "signup:u3", "purchase:u3"]
    assert await viewed(server, "data.n>=5.5", "data.n<=11") == ["activate:u1", "signup:u3"]
    assert await viewed(server, "data.plan~PRO") == ["signup:u2", "signup:u3"]
    assert await viewed(server, "data.plan!=pro", "data.user~u") == [
        "signup:u1",
        "signup:u2",
        "activate:u1",
        "activate:u3",
        "purchase:u3",
        "activate:u1",
        "signup:u4",
        "purchase:u2",
    ]  # a missing plan is "not pro" too
    assert await viewed(server, "data.n:*", "data.n<1") == []  # null and true are no numbers
    assert len(await viewed(server, "data.n:*")) == 8  # present, even as null
    export = await server.get("/export", params=[("where", "data.n>10"), ("format", "ndjson")])
    assert export.status == 200 and (await export.text()).count("\n") == 3
    stats = await get(
        server,
        "/stats",
        [("since", "2025-03-01T00:00:00Z"), ("until", "2025-03-07T00:00:00Z"), ("where", "data.plan~pro")],
    )
    assert [b["count"] for b in stats["buckets"]] == [1, 0, 0, 1, 0, 0] and stats["total"] == 2


async def test_erasure_takes_the_new_operators(server: Any) -> None:
    response = await server.delete("/events", params=[("where", "data.n>10")])
    assert response.status == 200 and (await response.json())["deleted"] == 3
    assert await viewed(server, "data.n>=0") == ["signup:u1", "activate:u1"]


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("data.n>ten", "must be a finite JSON number"),
        ("data.n<=", "must be a finite JSON number"),
        ("data.n>1e400", "must be a finite JSON number"),
        ('data.n!="x', "JSON string"),
        ("n>1", "data.<property>"),
        ("data.>1", "data.<property>"),
    ],
)
async def test_a_malformed_where_is_a_400_naming_it(server: Any, where: str, problem: str) -> None:
    for method, path in (("GET", "/view"), ("GET", "/stats"), ("GET", "/funnel"), ("DELETE", "/events")):
        # Each route is asked only what it takes: an unknown parameter is a 400 of its own.
        params = [("where", where), *([("steps", "signup"), ("by", "data.user")] if path == "/funnel" else [])]
        response = await server.request(method, path, params=params)
        assert response.status == 400, (method, path)
        body = await response.json()
        assert body["field"] == "where" and problem in body["error"], body


async def test_stats_unique_total_and_the_previous_period(server: Any) -> None:
    week2 = [("since", "2025-03-04T00:00:00Z"), ("until", "2025-03-07T00:00:00Z"), ("unique", "data.user")]
    body = await get(server, "/stats", [*week2, ("compare", "previous")])
    assert [(b["count"], b["unique"]) for b in body["buckets"]] == [(2, 1), (2, 2), (2, 2)]
    assert (body["total"], body["unique_total"]) == (6, 4)  # u1, u2, u3, u4: not 1 + 2 + 2
    previous = body["previous"]
    assert (previous["since"], previous["until"]) == ("2025-03-01T00:00:00Z", "2025-03-04T00:00:00Z")
    assert [(b["start"], b["count"]) for b in previous["buckets"]] == [
        ("2025-03-01T00:00:00Z", 2),
        ("2025-03-02T00:00:00Z", 1),
        ("2025-03-03T00:00:00Z", 0),
    ]
    assert (previous["total"], previous["unique_total"]) == (3, 2)
    bad = await server.get("/stats", params=[*week2, ("compare", "last_year")])
    assert bad.status == 400 and (await bad.json())["field"] == "compare"


async def test_funnel_counts_distinct_actors_step_after_step(server: Any) -> None:
    query = [("steps", "signup,activate,purchase"), ("by", "data.user")]
    query += [("since", "2025-03-01T00:00:00Z"), ("until", "2025-03-07T00:00:00Z")]
    body = await get(server, "/funnel", [*query, ("within", "7d")])
    assert body["steps"] == [
        {"key": "signup", "count": 4},
        {"key": "activate", "count": 2, "conversion": 0.5},  # u1, u3
        {"key": "purchase", "count": 1, "conversion": 0.5},  # u3 (u2 never activated)
    ]
    short = await get(server, "/funnel", [*query, ("within", "3h")])
    assert [s["count"] for s in short["steps"]] == [4, 1, 0]  # only u3 activates within 3 hours
    filtered = await get(server, "/funnel", [*query, ("where", "data.plan~pro")])
    assert [s["count"] for s in filtered["steps"]] == [2, 0, 0]  # the filter holds for every step
    for params, field in (
        ([("steps", ""), ("by", "data.user")], "steps"),
        ([("steps", "a,,b"), ("by", "data.user")], "steps"),
        ([("steps", "a")], "by"),
        ([("steps", "a"), ("by", "data.user"), ("within", "7 days")], "within"),
        ([("steps", "a"), ("by", "data.user"), ("key", "a")], "key"),
        # Given twice: the second was ignored (a one-step funnel, or the wrong actor).
        ([("steps", "signup"), ("steps", "activate"), ("by", "data.user")], "steps"),
        ([("steps", "signup"), ("by", "data.user"), ("by", "data.plan")], "by"),
        ([("steps", "signup"), ("by", "data.user"), ("within", "1d"), ("within", "7d")], "within"),
    ):
        response = await server.get("/funnel", params=params)
        assert response.status == 400 and (await response.json())["field"] == field, params
    # The default since (30 days before until) stops at the start of the calendar.
    early = await get(server, "/funnel", [("steps", "signup"), ("by", "data.user"), ("until", "0001-01-05T00:00:00Z")])
    assert (early["since"], early["steps"]) == ("0001-01-01T00:00:00Z", [{"key": "signup", "count": 0}])
