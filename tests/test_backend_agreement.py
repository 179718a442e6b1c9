"""Issue 19, item 11: SQLite and PostgreSQL give byte-identical answers to the same question on
the same events (hypothesis over generated events and questions), NUL characters, the literal
text `\\u0000`, U+FFFF and numbers spelt `100.0` or `-0.0` included; and a NUL in a filter is
an answer on both, never a 500 (nor an erasure that fails for ever)."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import app_flush
from tests.postgres_cluster import PostgresCluster
from tests.store_backends import BACKENDS, PostgresBackend, SQLiteBackend, StoreBackend
from tlytics.ingest import Settings, create_app
from tlytics.ingest.filter_language import parse_operator, parse_value
from tlytics.store import EventFilter, StoreReader, StoreRow, StoreWriter
from tlytics.store.base import PropertyMatch

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z, µs
DAY = 86_400_000_000
MINUTE = 60_000_000
KEYS = ("a", "b")

# The characters where the backends used to part: NUL, U+0001 and U+0002 (the PostgreSQL
# coding's own), a backslash and the letters of an escape, U+FFFF, LIKE's wildcards, case.
TEXT = st.text(alphabet=["\x00", "\x01", "\x02", "\\", "u", "0", "a", "A", "é", "\uffff", "%", "_"], max_size=6)
STRINGS = st.one_of(TEXT, st.sampled_from(["\\u0000", "\\\\u0000", "\x00", "100", "-0"]))
NUMBERS = st.one_of(
    st.sampled_from([100, 100.0, -0.0, 0, 1.5, 2**63 - 1, 2.0**63, 1e20, -7, 0.1]),
    st.integers(min_value=-5, max_value=5),
)
SCALARS = st.one_of(STRINGS, NUMBERS, st.booleans(), st.none())
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.sampled_from(["k", "\x00", "é"]), SCALARS, max_size=2)
)
DATA = st.fixed_dictionaries({}, optional={"v": VALUES, "w": VALUES})
EVENTS = st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 30), DATA), max_size=12)


def condition_text(value: Any) -> str:
    """A `where` value selecting `value`, as a client would write it."""
    if isinstance(value, str):
        return orjson.dumps(value).decode()  # quoted: that string
    return orjson.dumps(value).decode()


CONDITIONS = st.tuples(
    st.sampled_from(["v", "w"]),
    st.sampled_from(["=", "!=", "~", "*", ">", "<="]),
    VALUES,
)
QUESTIONS = st.lists(CONDITIONS, max_size=2)


def to_match(op: str, value: Any) -> PropertyMatch | None:
    """The condition as the HTTP layer would parse it; None when it would be a 400."""
    try:
        if op == "~":
            return parse_operator("~", value if isinstance(value, str) else condition_text(value))
        if op == "*":
            return parse_operator("*", "")
        return parse_operator(op, condition_text(value))  # type: ignore[arg-type]
    except ValueError:
        return None


@dataclass
class Pair:
    stores: dict[str, tuple[StoreWriter, StoreReader]]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster) -> Iterator[Pair]:
    """Both backends, open for the whole module (each example writes to a day of its own)."""
    backends: dict[str, StoreBackend] = {
        "sqlite": SQLiteBackend(tmp_path_factory.mktemp("agreement")),
        "postgresql": PostgresBackend(postgres_cluster),
    }
    assert set(backends) == set(BACKENDS)
    yield Pair({name: (backend.open_writer(), backend.open_reader()) for name, backend in backends.items()})
    for backend in backends.values():
        backend.close()


def answers(reader: StoreReader, window: EventFilter) -> bytes:
    """Every question of the reading contract on `window`, as JSON bytes."""
    page = reader.page(1, 100, where=window)
    starts = [window.since_us or 0, (window.since_us or 0) + 10 * MINUTE]
    found: dict[str, Any] = {
        "page": [page.total, [(e.id, e.key, e.timestamp_us, e.data_json) for e in page.events]],
        "buckets": reader.bucket_counts(starts, (window.since_us or 0) + DAY, window, "v"),
        "rollup buckets": reader.bucket_counts(starts, (window.since_us or 0) + DAY, window, None),
    }
    for path in ("v", "w"):
        breakdown = reader.breakdown(window, path, 3)
        found[f"breakdown {path}"] = [breakdown.top, breakdown.total, breakdown.missing]
        found[f"unique {path}"] = reader.unique_count(window, path)
    found["funnel"] = reader.funnel(window, ["a", "b"], "v", DAY)
    return orjson.dumps(found)


_days = itertools.count(1)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, question=QUESTIONS)
def test_both_backends_answer_the_same_bytes(
    pair: Pair, events: list[tuple[str, int, dict[str, Any]]], question: list[tuple[str, str, Any]]
) -> None:
    day = T0 + next(_days) * DAY  # this example's own day: earlier examples' events never count
    rows: list[StoreRow] = [
        (uuid.uuid4().bytes, key, day + minute * MINUTE, day, orjson.dumps(data).decode())
        for key, minute, data in events
    ]
    conditions = []
    for path, op, value in question:
        match = to_match(op, value)
        if match is not None:
            conditions.append((path, match))
    window = EventFilter(since_us=day, until_us=day + DAY, where=tuple(conditions))
    results = {}
    for name, (writer, reader) in pair.stores.items():
        writer.insert(rows)
        results[name] = answers(reader, window)
    assert results["postgresql"] == results["sqlite"]


@pytest.fixture(params=sorted(BACKENDS))
def opened(request: pytest.FixtureRequest) -> Iterator[tuple[StoreWriter, StoreReader]]:
    backend: StoreBackend = BACKENDS[request.param](request)
    yield backend.open_writer(), backend.open_reader()
    backend.close()


def test_nul_in_filters_is_answered_and_erased_on_both(opened: tuple[StoreWriter, StoreReader]) -> None:
    writer, reader = opened
    rows = [
        (uuid.UUID(int=1).bytes, "a", T0, T0, orjson.dumps({"v": "x\x00y"}).decode()),
        (uuid.UUID(int=2).bytes, "a", T0 + 1, T0, orjson.dumps({"v": "x\uffffy"}).decode()),
        (uuid.UUID(int=3).bytes, "a", T0 + 2, T0, orjson.dumps({"v": "x\\u0000y"}).decode()),  # 8 characters
    ]
    writer.insert(rows)
    assert reader.page(1, 10, where=EventFilter(keys=("a\x00b",))).total == 0  # /view?key=a%00b
    for value, expected in (("x\x00y", 1), ("x\uffffy", 2), ("x\\u0000y", 3)):
        where = EventFilter(where=(("v", parse_value(orjson.dumps(value).decode())),))
        assert [e.id for e in reader.page(1, 10, where=where).events] == [str(uuid.UUID(int=expected))]
    assert reader.breakdown(EventFilter(), "v", 10).top == [("x\x00y", 1), ("x\\u0000y", 1), ("x\uffffy", 1)]
    contains = EventFilter(where=(("v", parse_operator("~", "\x00")),))
    assert reader.page(1, 10, where=contains).total == 1
    # An erasure by a NUL value or key completes (it was a 503 for ever on PostgreSQL).
    erase = EventFilter(where=(("v", parse_value(orjson.dumps("x\x00y").decode())),))
    assert writer.delete_matching(erase, max_rows=10, remember_ids=True) == 1
    assert writer.delete_matching(EventFilter(keys=("a\x00",)), max_rows=10, remember_ids=True) == 0
    assert writer.insert(rows) == 0 and reader.count() == 2


@pytest.fixture(params=sorted(BACKENDS))
async def server(request: pytest.FixtureRequest, aiohttp_client: Any, settings: Settings) -> AsyncIterator[Any]:
    """A server on the store named by the parameter, holding events with NUL in a value."""
    cluster: PostgresCluster | None = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        name = f"nul_{uuid.uuid4().hex[:12]}"
        settings = dataclasses.replace(
            settings, spool_dir=settings.db_path.with_suffix(".spool"), store_url=cluster.create_database(name)
        )
    app: web.Application = create_app(settings)
    client = await aiohttp_client(app)
    events = [{"key": "a", "data": {"v": "x\x00y"}}, {"key": "a", "data": {"v": "x\\u0000y"}}]
    assert (await client.post("/events", json=events)).status == 200
    await app_flush(app)
    yield client
    await client.close()
    if cluster is not None:
        cluster.drop_database(name)


async def test_nul_in_a_request_is_answered_on_a_real_server(server: Any) -> None:
    answers = []
    for target in (
        "/view?key=a%00b",
        "/view?where=data.v:x%00y",
        "/view?where=data.v~%00",
        "/stats?where=data.v:x%00y",
    ):
        response = await server.get(target)
        assert response.status == 200, (target, await response.text())
        body = await response.json()
        answers.append(body["total"])
    assert answers == [0, 1, 1, 1]
    response = await server.delete("/events?where=data.v:x%00y")
    assert response.status == 200 and await response.json() == {"deleted": 1}
    response = await server.get("/view")
    assert [event["data"] for event in (await response.json())["events"]] == [{"v": "x\\u0000y"}]
