"""Declared properties (`--property`, issue 21) in the SQLite store: a filter on a declared
property reads its typed, indexed values instead of each event's JSON, and answers exactly
what the JSON path answers on the same events, for every operator, whatever was backfilled,
inserted during the backfill, erased, expired or stored again on the way."""

from __future__ import annotations

import itertools
import json
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import eventually, http_json
from tests.postgres_cluster import PostgresCluster
from tlytics.cli import parse_settings
from tlytics.ingest.query import where_condition
from tlytics.ingest.responses import ApiError
from tlytics.jsontext import canonical
from tlytics.store import EventFilter, SQLiteStore, StoreRow
from tlytics.store.open import open_writer
from tlytics.store.postgres import PostgresReader, PostgresWriter
from tlytics.store.sqlite import SQLiteReader
from tlytics.store.sqlite.properties import complete_properties

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z, µs
MINUTE = 60_000_000
HOUR = 60 * MINUTE

# Values typed every way a filter tells apart: 1 and 1.0 and "1", true and 1, null and missing.
VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([1.0, 2.5, -0.0, 1e300, 10**20, 2**63, -(2**63)]),
    st.sampled_from(["1", "2.5", "abc", "ABC", "", "a\x00b", "É", "*", "true", "null", " 1"]),
    st.booleans(),
    st.none(),
    st.sampled_from([{"x": 1}, [1], []]),
)
MISSING = object()
OPERATORS = [":", "!=", ">", ">=", "<", "<=", "~"]
FILTER_TEXTS = [
    *("1", "1.0", "2.5", "-0", "0", "3", "abc", "ab", "B", '"1"', '""', "true", "false", "null", "*", "É", "é"),
    *("1e300", "100000000000000000000", "9223372036854775808", "-9223372036854775808", "1e400", "a\x00"),
]
FILTER_VALUES = st.sampled_from(FILTER_TEXTS)


def made_rows(values: list[Any], first: int) -> list[StoreRow]:
    """One event per value (MISSING: no property `p`), 7 minutes apart, three keys, and a
    second property `q` that is never declared."""
    made = []
    for offset, value in enumerate(values):
        n = first + offset
        data: dict[str, Any] = {"q": n % 4}
        if value is not MISSING:
            data["p"] = value
        text = canonical(json.dumps(data).encode()).decode()  # orjson stops at 64-bit integers
        made.append((uuid.UUID(int=n + 1).bytes, f"k{n % 3}", T0 + n * 7 * MINUTE, T0, text))
    return made


@st.composite
def filters(draw: st.DrawFn) -> EventFilter:
    conditions = []
    for _ in range(draw(st.integers(1, 2))):
        text = "data.p:*" if draw(st.booleans()) and draw(st.booleans()) else None
        if text is None:
            text = f"data.p{draw(st.sampled_from(OPERATORS))}{draw(FILTER_VALUES)}"
        try:
            conditions.append(where_condition(text))
        except ApiError:
            conditions.append(where_condition("data.p:*"))
    if draw(st.booleans()):
        conditions.append(where_condition(f"data.q:{draw(st.integers(0, 3))}"))  # undeclared beside
    keys = draw(st.sampled_from([(), ("k0",), ("k1", "k2")]))
    since = draw(st.sampled_from([None, T0, T0 + 30 * MINUTE]))
    until = draw(st.sampled_from([None, T0 + 2 * HOUR, T0 + 5 * HOUR]))
    return EventFilter(keys=keys, since_us=since, until_us=until, where=tuple(conditions))


def every_condition() -> list[EventFilter]:
    """Every operator with every filter value, one condition each (those that parse)."""
    made = [EventFilter(where=(where_condition("data.p:*"),))]
    for op in OPERATORS:
        for value in FILTER_TEXTS:
            try:
                made.append(EventFilter(where=(where_condition(f"data.p{op}{value}"),)))
            except ApiError:
                pass  # an ordering of a value that is no number: a 400, never a read
    return made


def pages(store: SQLiteStore, where: EventFilter) -> tuple[Any, ...]:
    """A page and bucket counts, over every time and over a window whose edges cut buckets."""
    page = store.page(1, 1000, where=where)
    window = replace(where, since_us=T0 + 20 * MINUTE, until_us=T0 + 3 * HOUR)
    starts = [T0 - HOUR + n * HOUR for n in range(8)]
    return (
        page.total,
        [event.id for event in page.events],
        store.bucket_counts(starts, T0 + 7 * HOUR, where, None),
        store.bucket_counts(starts, T0 + 7 * HOUR, window, None),
    )


def breakdowns(store: SQLiteStore) -> list[Any]:
    """Breakdowns and distinct values of `p` over time ranges alone (what a declared property
    answers from its values)."""
    ranges = [(None, None), (T0 + 30 * MINUTE, T0 + 2 * HOUR), (T0 + 20 * MINUTE, None), (T0 + HOUR, T0 + HOUR)]
    starts = [T0 - HOUR + n * HOUR for n in range(8)]
    uniques = [
        (store.unique_count(window, "p"), store.bucket_counts(starts, T0 + 7 * HOUR, window, "p"))
        for window in (EventFilter(since_us=low, until_us=high) for low, high in ranges)
    ]
    return [
        *uniques,
        *(
            store.breakdown(EventFilter(since_us=low, until_us=high), "p", limit)
            for low, high in ranges
            for limit in (2, 50)
        ),
    ]


def answers(store: SQLiteStore, where: EventFilter) -> dict[str, Any]:
    """What every read the filter reaches answers (ids as strings, so a difference reads well)."""
    page = store.page(1, 1000, where=where)
    second = store.page(1, 3, where=where, ascending=True)
    starts = [T0 - HOUR + n * HOUR for n in range(8)]
    return {
        "page": (page.total, [event.id for event in page.events]),
        "asc": (second.total, [event.id for event in second.events], second.next_position),
        "buckets": store.bucket_counts(starts, T0 + 7 * HOUR, where, None),
        "unique_buckets": store.bucket_counts(starts, T0 + 7 * HOUR, where, "q"),
        "unique": store.unique_count(where, "q"),
        "breakdown": store.breakdown(where, "q", 10),
        "funnel": store.funnel(where, ["k0", "k1", "k2"], "q", HOUR),
    }


def both_stores(directory: Path, before: list[StoreRow]) -> tuple[SQLiteStore, SQLiteStore]:
    """A store without declared properties and one that declares `p` after `before` was
    stored (so those events are backfilled), each holding `before`."""
    plain = SQLiteStore(directory / "plain.db")
    plain.insert(before)
    earlier = SQLiteStore(directory / "declared.db")
    earlier.insert(before)
    earlier.close()
    return plain, SQLiteStore(directory / "declared.db", declared_properties=["p"])


def assert_declared(store: SQLiteStore) -> None:
    assert store.wait_backfilled(60)
    assert "p" in complete_properties(store._read_connection())  # else the test proves nothing


@pytest.mark.timeout(600)  # 40 examples of two stores each: over the default 120 s at load 12
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=25),
    after=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=15),
    wheres=st.lists(filters(), min_size=1, max_size=4),
    erase=filters(),
    expire_before=st.sampled_from([None, T0 + 20 * MINUTE, T0 + 2 * HOUR]),
)
def test_declared_answers_equal_undeclared_answers(
    before: list[Any], after: list[Any], wheres: list[EventFilter], erase: EventFilter, expire_before: int | None
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        plain, declared = both_stores(Path(directory), made_rows(before, 0))
        try:
            newer = made_rows(after, len(before))
            plain.insert(newer)
            declared.insert(newer)  # perhaps while the backfill runs: both paths store values
            assert_declared(declared)
            for single in every_condition():
                assert pages(declared, single) == pages(plain, single), single
            assert breakdowns(declared) == breakdowns(plain)
            for where in wheres:
                assert answers(declared, where) == answers(plain, where), where
            # Erasure and retention take values away with their events; an expired event
            # stored again (a replay) gets its values again, an erased one is never stored.
            for store in (plain, declared):
                store.delete_matching(erase, max_rows=10_000, remember_ids=True)
                if expire_before is not None:
                    store.delete_matching(EventFilter(until_us=expire_before), max_rows=10_000, remember_ids=False)
                store.insert(made_rows(before, 0))
            for where in [*wheres, erase]:
                assert answers(declared, where) == answers(plain, where), where
            for single in every_condition():
                assert pages(declared, single) == pages(plain, single), single
            assert breakdowns(declared) == breakdowns(plain)
        finally:
            plain.close()
            declared.close()


def test_reads_use_the_declared_values_once_complete(tmp_path: Path) -> None:
    """The values are what answers: a store whose stored values were tampered with answers
    from them (so the index, not the JSON, served the read)."""
    store = SQLiteStore(tmp_path / "s.db", declared_properties=["amount"])
    store.insert(made_amounts(range(100)))
    assert_declared_path(store, "amount")
    where = EventFilter(where=(where_condition("data.amount>90"),))
    assert store.page(1, 10, where=where).total == 9
    store._write_connection.execute("DELETE FROM property_values WHERE value > 95")
    assert store.page(1, 10, where=where).total == 5
    store.close()


def made_amounts(amounts: range) -> list[StoreRow]:
    return [
        (uuid.UUID(int=n + 1).bytes, "buy", T0 + n * MINUTE, T0, orjson.dumps({"amount": n}).decode()) for n in amounts
    ]


def assert_declared_path(store: SQLiteStore, path: str) -> None:
    assert store.wait_backfilled(60)
    assert path in complete_properties(store._read_connection())


def test_a_backfill_answers_exactly_meanwhile_and_resumes_after_a_stop(tmp_path: Path) -> None:
    """Declared on a store of 45,000 events: every answer while the backfill runs is the exact
    one; a writer closed mid-way leaves the property incomplete (read from the JSON), and the
    next one finishes it."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.insert(made_amounts(range(45_000)))
    store.close()
    where = EventFilter(where=(where_condition("data.amount>=44990"),))
    declaring = SQLiteStore(path, declared_properties=["amount"])
    declaring.close()  # stops after the chunk it is on, perhaps before the first
    reopened = SQLiteStore(path, declared_properties=["amount"])
    assert reopened.page(1, 10, where=where).total == 10
    seen = set()
    for _ in range(1000):  # bounded: the backfill ends long before
        seen.add(reopened.page(1, 10, where=where).total)
        if reopened.wait_backfilled(0.01):
            break
    assert_declared_path(reopened, "amount")
    assert seen == {10} and reopened.page(1, 10, where=where).total == 10
    reopened.close()


def test_a_property_no_longer_declared_is_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path, declared_properties=["amount"])
    store.insert(made_amounts(range(10)))
    store.close()
    store = SQLiteStore(path, declared_properties=[])
    assert store._write_connection.execute("SELECT count(*) FROM property_values").get == 0
    assert store.page(1, 10, where=EventFilter(where=(where_condition("data.amount<3"),))).total == 3
    store.close()


def test_property_is_a_repeatable_data_property_setting(capsys: pytest.CaptureFixture[str]) -> None:
    settings_, _ = parse_settings(["--property", "data.amount", "--property", "data.a.b"], {})
    assert settings_.declared_properties == ("amount", "a.b")
    settings_, _ = parse_settings([], {"TLYTICS_PROPERTIES": "data.path, data.user_id"})
    assert settings_.declared_properties == ("path", "user_id")
    with pytest.raises(SystemExit):
        parse_settings(["--property", "amount"], {})
    assert "data.<property>" in capsys.readouterr().err


def test_a_server_declares_its_properties_and_answers_from_them(server_factory: Any) -> None:
    """`--property data.amount` reaches the writer: the server stores the values as it writes
    (a store filled before is backfilled), and its answers are those of the JSON path."""
    first = server_factory(extra_args=[]).start()
    buys = [
        {"id": str(uuid.UUID(int=n + 1)), "key": "buy", "timestamp": f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}Z"}
        | {"data": {"amount": n % 100, "path": f"/p/{n % 7}"}}
        for n in range(1_000)
    ]
    assert http_json("POST", f"{first.url}/batch", {"events": buys[:600]}, timeout_s=60)[0] == 200
    query = "where=data.amount%3E=90&since=2025-01-01T00:00:00Z&until=2025-01-02T00:00:00Z"

    def total(server: Any, expected: int) -> int | None:
        status, body = http_json("GET", f"{server.url}/view?{query}")
        assert status == 200, body
        return cast(int, body["total"]) if body["total"] == expected else None

    eventually(lambda: total(first, 60), timeout_s=60, what="the first events written")
    first.stop()
    second = server_factory(extra_args=["--property", "data.amount", "--property", "data.path"]).start()
    assert http_json("POST", f"{second.url}/batch", {"events": buys[600:]}, timeout_s=60)[0] == 200
    eventually(lambda: total(second, 100), timeout_s=60, what="every event written")

    def declared() -> set[str] | None:
        reader = SQLiteReader(second.db_path)  # read-only: the server's writer is the only one
        try:
            found = set(complete_properties(reader._read_connection()))
        finally:
            reader.close()
        return found if found == {"amount", "path"} else None

    eventually(declared, timeout_s=60, what="the backfill done")
    assert total(second, 100) == 100
    status, body = http_json("GET", f"{second.url}/stats?interval=day&{query}&breakdown=data.path")
    assert status == 200 and body["total"] == 100, body
    second.stop()


# PostgreSQL: the same properties, the same answers (tlytics.store.postgres.declared).

_pg_databases = itertools.count()


class PostgresStore:
    """A PostgreSQL writer and reader on one database, used as the tests above use a
    SQLiteStore (inserts and deletions on the writer, reads on the reader)."""

    def __init__(self, url: str, declared_properties: list[str] | None = None) -> None:
        self.writer = PostgresWriter(url, node="t", declared_properties=declared_properties)
        self.reader = PostgresReader(url)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader if hasattr(self.reader, name) else self.writer, name)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def pg_complete(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        return {str(path) for (path,) in connection.execute("SELECT path FROM declared_properties WHERE complete")}


@pytest.mark.timeout(900)  # every operator with every value, on two databases, a few times
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=25),
    after=st.lists(st.one_of(VALUES, st.just(MISSING)), max_size=15),
    wheres=st.lists(filters(), min_size=1, max_size=4),
    erase=filters(),
    expire_before=st.sampled_from([None, T0 + 20 * MINUTE, T0 + 2 * HOUR]),
)
def test_declared_answers_equal_undeclared_answers_on_postgresql(
    postgres_cluster: PostgresCluster,
    before: list[Any],
    after: list[Any],
    wheres: list[EventFilter],
    erase: EventFilter,
    expire_before: int | None,
) -> None:
    names = [f"declared_{next(_pg_databases)}" for _ in range(2)]
    urls = [postgres_cluster.create_database(name) for name in names]
    plain = PostgresStore(urls[0])
    earlier = PostgresStore(urls[1])
    stores: list[PostgresStore] = [plain, earlier]
    try:
        plain.insert(made_rows(before, 0))
        earlier.insert(made_rows(before, 0))
        earlier.close()
        declared = PostgresStore(urls[1], declared_properties=["p"])  # backfills `before`
        stores[1] = declared
        newer = made_rows(after, len(before))
        plain.insert(newer)
        declared.insert(newer)  # perhaps while the backfill runs: both paths store values
        assert declared.wait_backfilled(60) and pg_complete(urls[1]) == {"p"}
        sure = cast(Any, declared)  # read as the helpers above read a SQLiteStore
        for single in every_condition():
            assert pages(sure, single) == pages(cast(Any, plain), single), single
        assert breakdowns(sure) == breakdowns(cast(Any, plain))
        for where in wheres:
            assert answers(sure, where) == answers(cast(Any, plain), where), where
        for store in (plain, declared):
            store.delete_matching(erase, max_rows=10_000, remember_ids=True)
            if expire_before is not None:
                store.delete_matching(EventFilter(until_us=expire_before), max_rows=10_000, remember_ids=False)
            store.insert(made_rows(before, 0))
        for where in [*wheres, erase]:
            assert answers(sure, where) == answers(cast(Any, plain), where), where
        for single in every_condition():
            assert pages(sure, single) == pages(cast(Any, plain), single), single
        assert breakdowns(sure) == breakdowns(cast(Any, plain))
    finally:
        for store in stores:
            store.close()
        for name in names:
            postgres_cluster.drop_database(name)


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = f"declared_{next(_pg_databases)}"
    yield postgres_cluster.create_database(name)
    postgres_cluster.drop_database(name)


def test_postgresql_reads_use_the_declared_values_once_complete(pg_url: str) -> None:
    """The values are what answers: tampered values change the answer (the index served it)."""
    store = PostgresStore(pg_url, declared_properties=["amount"])
    try:
        store.insert(made_amounts(range(100)))
        assert store.wait_backfilled(60) and pg_complete(pg_url) == {"amount"}
        where = EventFilter(where=(where_condition("data.amount>90"),))
        assert store.page(1, 10, where=where).total == 9
        assert store.breakdown(EventFilter(), "amount", 3).total == 100
        with psycopg.connect(pg_url) as connection:
            connection.execute("DELETE FROM property_values WHERE num > 95")
        assert store.page(1, 10, where=where).total == 5
        assert store.unique_count(EventFilter(), "amount") == 96
    finally:
        store.close()


def test_a_postgresql_backfill_answers_exactly_meanwhile_and_resumes_after_a_stop(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    store.insert(made_amounts(range(30_000)))  # two chunks of the backfill
    store.close()
    where = EventFilter(where=(where_condition("data.amount>=29990"),))
    declaring = PostgresStore(pg_url, declared_properties=["amount"])
    declaring.close()  # stops after the chunk it is on, perhaps before the first
    reopened = PostgresStore(pg_url, declared_properties=["amount"])
    try:
        seen = set()
        for _ in range(3000):  # bounded: the backfill ends long before
            seen.add(reopened.page(1, 10, where=where).total)
            if reopened.wait_backfilled(0.01):
                break
        assert reopened.wait_backfilled(60) and pg_complete(pg_url) == {"amount"}
        assert seen == {10} and reopened.page(1, 10, where=where).total == 10
    finally:
        reopened.close()
    forgetting = PostgresStore(pg_url, declared_properties=[])
    try:
        with psycopg.connect(pg_url) as connection:
            assert connection.execute("SELECT count(*) FROM property_values").fetchone() == (0,)
        assert forgetting.page(1, 10, where=where).total == 10
    finally:
        forgetting.close()


def test_property_reaches_the_postgresql_writer(pg_url: str, tmp_path: Path) -> None:
    """`--property` with `--store postgresql://…`: the writer the server opens declares it."""
    settings_, _ = parse_settings(
        ["--store", pg_url, "--property", "data.amount", "--spool", str(tmp_path / "spool")], {}
    )
    writer = open_writer(settings_)
    try:
        writer.insert(made_amounts(range(10)))
        assert cast(Any, writer).wait_backfilled(60) and pg_complete(pg_url) == {"amount"}
        with psycopg.connect(pg_url) as connection:
            assert connection.execute("SELECT count(*) FROM property_values").fetchone() == (10,)
    finally:
        writer.close()
