"""Issue 19, item 7: what a stats key (the one a share link carries) learns, asked as a hostile
holder of that key would, on a real server (pytest-aiohttp on a loopback socket) on both
stores. It learns aggregates only: no raw value of a property, no one person singled out;
a read or admin key still gets every answer in full."""

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

STATS_KEY = "stats-key-for-the-share-link"
READ_KEY = "read-key-for-the-analyst-0001"
WRITE_KEY = "write-key-for-the-application"
RANGE = [("since", "2025-03-01T00:00:00Z"), ("until", "2025-03-08T00:00:00Z"), ("interval", "day")]


def ev(key: str, day: int, minute: int, **data: Any) -> dict[str, Any]:
    return {"key": key, "timestamp": f"2025-03-0{day}T10:{minute:02d}:00Z", "data": data}


# Six French visitors, five German ones, and one lonely Icelander with an email and a profile.
EVENTS = [
    *(ev("page_view", 1, n, user_id=f"fr{n}", country="FR", email=f"fr{n}@example.com") for n in range(6)),
    *(ev("page_view", 2, n, user_id=f"de{n}", country="DE", email=f"de{n}@example.com") for n in range(5)),
    ev("page_view", 3, 0, user_id="alice", country="IS", email="alice@example.is", profile={"age": 41}),
    ev("signup", 3, 1, user_id="alice", country="IS", email="alice@example.is"),
]


@pytest.fixture(params=["sqlite", "postgresql"])
async def server(request: pytest.FixtureRequest, aiohttp_client: Any, settings: Settings) -> AsyncIterator[Any]:
    """A server on the store named by the parameter, holding EVENTS; data.country is public."""
    cluster: PostgresCluster | None = None
    settings = dataclasses.replace(
        settings,
        write_keys=(WRITE_KEY,),
        stats_keys=(STATS_KEY,),
        read_keys=(READ_KEY,),
        public_properties=("country",),
        min_group_size=5,
    )
    if request.param == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        name = f"scope_{uuid.uuid4().hex[:12]}"
        settings = dataclasses.replace(
            settings, spool_dir=settings.db_path.with_suffix(".spool"), store_url=cluster.create_database(name)
        )
    app: web.Application = create_app(settings)
    client = await aiohttp_client(app)
    posted = await client.post("/events", json=EVENTS, headers={"Authorization": f"Bearer {WRITE_KEY}"})
    assert posted.status == 200
    await app_flush(app)
    yield client
    await client.close()
    if cluster is not None:
        cluster.drop_database(name)


async def ask(client: Any, path: str, params: list[tuple[str, str]], key: str = STATS_KEY) -> tuple[int, Any]:
    response = await client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})
    return response.status, await response.json()


async def test_a_stats_key_cannot_list_the_values_of_a_property_not_declared_public(server: Any) -> None:
    for prop in ("data.email", "data.profile", "data.user_id"):
        status, body = await ask(server, "/stats", [*RANGE, ("breakdown", prop), ("limit", "1000")])
        assert status == 403, body
        assert body["field"] == "breakdown" and prop in body["error"] and "--public-property" in body["error"]
        assert "example" not in str(body)
    # The analyst's read key still lists them.
    status, body = await ask(server, "/stats", [*RANGE, ("breakdown", "data.email"), ("limit", "1000")], READ_KEY)
    assert status == 200 and {"value": "alice@example.is", "count": 2} in body["breakdown"]


async def test_a_public_breakdown_folds_groups_smaller_than_the_minimum_into_other(server: Any) -> None:
    status, body = await ask(server, "/stats", [*RANGE, ("breakdown", "data.country")])
    assert status == 200, body
    # FR (6) and DE (5) are shown; the Icelander's two events are counted, unnamed.
    assert body["breakdown"] == [
        {"value": "FR", "count": 6},
        {"value": "DE", "count": 5},
        {"value": None, "other": True, "count": 2},
    ]
    assert "IS" not in str(body)
    # A window around one event (the attacker's narrowing) names no value at all.
    one = [("since", "2025-03-03T10:00:00Z"), ("until", "2025-03-03T10:00:01Z"), ("interval", "hour")]
    status, body = await ask(server, "/stats", [*one, ("breakdown", "data.country")])
    assert status == 200 and body["breakdown"] == [{"value": None, "other": True, "count": 1}]
    # A read key sees the small group.
    status, body = await ask(server, "/stats", [*RANGE, ("breakdown", "data.country")], READ_KEY)
    assert {"value": "IS", "count": 2} in body["breakdown"]


async def test_a_stats_key_cannot_single_out_one_person_with_where(server: Any) -> None:
    # A condition on a property that is not public: refused whatever its value.
    for where in ("data.user_id:alice", "data.user_id:nobody", "data.email~alice"):
        status, body = await ask(server, "/stats", [*RANGE, ("where", where)])
        assert status == 403 and body["field"] == "where", body
    status, body = await ask(
        server,
        "/funnel",
        [("steps", "page_view,signup"), ("by", "data.user_id"), ("where", "data.user_id:alice"), *RANGE[:2]],
    )
    assert status == 403 and body["field"] == "where"
    # On a public property, a group smaller than the minimum is refused exactly as an empty
    # one: "one Icelander" and "no Norwegian" look alike.
    answers = []
    for where in ("data.country:IS", "data.country:NO"):
        status, body = await ask(server, "/stats", [*RANGE, ("where", where)])
        answers.append((status, body))
    assert answers[0] == answers[1] and answers[0][0] == 403 and answers[0][1]["field"] == "where"
    # Differencing with other operators is closed: != and orderings and substrings are refused.
    for where in ("data.country!=FR", "data.country~I", "data.country>1"):
        status, body = await ask(server, "/stats", [*RANGE, ("where", where)])
        assert status == 403 and body["field"] == "where", (where, body)
    # A large enough public group is answered.
    status, body = await ask(server, "/stats", [*RANGE, ("where", "data.country:FR"), ("unique", "data.user_id")])
    assert status == 200 and body["total"] == 6 and body["unique_total"] == 6
    # And the read key singles out whom it likes.
    status, body = await ask(server, "/stats", [*RANGE, ("where", "data.user_id:alice")], READ_KEY)
    assert status == 200 and body["total"] == 2


async def test_a_funnel_for_a_stats_key_counts_actors_but_not_a_small_filtered_group(server: Any) -> None:
    params = [("steps", "page_view,signup"), ("by", "data.user_id"), *RANGE[:2]]
    status, body = await ask(server, "/funnel", params)
    assert status == 200 and [step["count"] for step in body["steps"]] == [12, 1]
    status, body = await ask(server, "/funnel", [*params, ("where", "data.country:IS")])
    assert status == 403 and body["field"] == "where"
    status, body = await ask(server, "/funnel", [*params, ("where", "data.country:IS")], READ_KEY)
    assert status == 200 and [step["count"] for step in body["steps"]] == [1, 1]


async def test_compare_previous_is_refused_when_either_period_is_a_small_group(server: Any) -> None:
    # Mar 1-7 holds 6 French events; Feb 22-28 none: the previous period would say "none".
    params = [*RANGE, ("where", "data.country:FR"), ("compare", "previous")]
    status, body = await ask(server, "/stats", params)
    assert status == 403 and body["field"] == "where"
    status, body = await ask(server, "/stats", params[:-1])
    assert status == 200 and body["total"] == 6
