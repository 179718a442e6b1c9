"""The where operators mean the same events in both stores, whatever the numbers' spellings:
every operator, with values from a hypothesis strategy, over stored values chosen at the edges
(64 bits, a double's range and precision, spellings JSON allows), selects the same ids in
SQLite and PostgreSQL, and equality and `!=` split the events in two."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.postgres_cluster import PostgresCluster
from tests.store_backends import PostgresBackend, SQLiteBackend
from tlytics.ingest.filter_language import parse_operator, parse_value
from tlytics.store import EventFilter, StoreReader
from tlytics.store.base import Operator, PropertyMatch

T0 = 1_735_689_600_000_000
# data.v of each event, as JSON text.
STORED = [
    "0", "-0", "1", "-1", "1.0", "1E2", "1e-2", "0.1", "0.30000000000000004", "0.3",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "12345678901234567890123", "1" + "0" * 400, "-" + "9" * 330, "1.7976931348623157e308",
    "5e-324", "4.9e-324", "1e-5000", "-1e-5000", "2.5e-1000", "100000000000000000000e-30",
    "true", "false", "null", '"1"', '"abc"', '"ABC def"', '"a%b_c\\\\d"', '"Ünïcode ß"', '""',
    "[1]", '{"x":1}',
]  # fmt: skip
NUMBER_TEXTS = st.sampled_from(STORED[:24]) | st.integers().map(str) | st.floats(allow_nan=False).map(repr)
OPERATORS: list[Operator] = ["=", "!=", ">", ">=", "<", "<=", "~", "*"]


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster) -> Iterator[list[StoreReader]]:
    backends = [SQLiteBackend(tmp_path_factory.mktemp("ops")), PostgresBackend(postgres_cluster)]
    rows = [(uuid.UUID(int=n).bytes, "k", T0 + n, T0, f'{{"v":{v}}}') for n, v in enumerate(STORED)]
    rows.append((uuid.UUID(int=999).bytes, "k", T0, T0, "{}"))
    opened = []
    for backend in backends:
        writer = backend.open_writer()
        assert writer.insert(rows) == len(rows)
        opened.append(backend.open_reader())
    yield opened
    for backend in backends:
        backend.close()


def selected(reader: StoreReader, path: str, match: PropertyMatch) -> set[str]:
    page = reader.page(1, 1000, where=EventFilter(where=((path, match),)))
    return {event.id for event in page.events}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(OPERATORS), value=NUMBER_TEXTS | st.sampled_from(STORED[24:]) | st.text(max_size=6))
def test_both_stores_select_the_same_events(readers: list[StoreReader], op: Operator, value: str) -> None:
    try:
        match = parse_operator(op, "" if op == "*" else value)
    except ValueError:
        return  # refused alike by both: the API answers 400
    sqlite, postgres = (selected(reader, "v", match) for reader in readers)
    assert sqlite == postgres, (op, value)
    if op == "=":
        complement = selected(readers[0], "v", parse_operator("!=", value))
        assert not sqlite & complement and len(sqlite | complement) == len(STORED) + 1


def test_the_stores_order_numbers_as_sqlite_reads_them(readers: list[StoreReader], tmp_path: Path) -> None:
    for reader in readers:
        above = selected(reader, "v", parse_operator(">", "9223372036854775807"))
        # 2^63 (a double), the 23-digit integer, 10^400 (infinity) and the largest double.
        assert len(above) == 4
        tiny = selected(reader, "v", parse_operator(">", "0"))
        assert len(tiny) == 15  # 1, 1.0, 1E2, 1e-2, 0.1, 0.3…4, 0.3, 2^63-1, 2^63, the big four, 5e-324, 4.9e-324


def test_a_recorded_erasure_keeps_its_operators() -> None:
    # PostgreSQL records erasures as JSON to apply them to other nodes' later inserts.
    from tlytics.store.postgres.filters import filter_from_json, filter_to_json

    conditions = tuple(("v", parse_operator(op, "" if op == "*" else "5")) for op in OPERATORS)
    recorded = EventFilter(keys=("k",), since_us=T0, where=conditions)
    assert filter_from_json(filter_to_json(recorded)) == recorded
    # An equality filter is written as earlier versions wrote it: the same erasure, one row.
    assert '"op"' not in filter_to_json(EventFilter(where=(("v", parse_value("5")),)))
