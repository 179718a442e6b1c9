"""/view pages filtered by one condition on a declared property come from its stored values
alone (total, positions, then only the page's events): the same pages, by number and by
cursor, both ways, as the JSON path gives, with times or without; and it is the values that
answer (tampered values change the page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_declared_properties import HOUR, MISSING, T0, assert_declared, both_stores, made_rows
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, SQLiteStore
from tlytics.store.base import Page
from tlytics.store.sqlite.properties import NUMBER

# Numbers, numeric text, words, true/false/null, missing: every kind the values hold, each
# spread over the whole time range.
_KINDS: list[list[Any]] = [
    [n % 37 for n in range(150)],
    [f"/products/{n % 9}" for n in range(60)],
    [str(n % 5) for n in range(20)],
    [True, False, None, MISSING, 2.5, -0.0, 12.0] * 6,
]
VALUES: list[Any] = [kind[n * len(kind) // 150] for n in range(150) for kind in _KINDS]
CONDITIONS = [
    "data.p>20",
    "data.p<=3",
    "data.p:7",
    "data.p:3",
    "data.p~ducts/4",
    "data.p:true",
    "data.p:null",
    "data.p:*",
]


def _walk(store: SQLiteStore, where: EventFilter, ascending: bool) -> list[Page]:
    pages = [store.page(1, 7, where=where, ascending=ascending)]
    for _ in range(200):  # bounded: at most 300 events, 7 a page
        if pages[-1].next_position is None:
            break
        pages.append(store.page(1, 7, where=where, after=pages[-1].next_position, ascending=ascending))
    return pages


def _numbered(store: SQLiteStore, where: EventFilter, ascending: bool) -> list[Page]:
    return [store.page(number, 7, where=where, ascending=ascending) for number in (1, 2, 5, 40, 10**9)]


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("window", [None, (T0 + 3 * HOUR, T0 + 20 * HOUR)])
def test_pages_of_one_declared_condition_are_the_json_paths(
    tmp_path: Path, condition: str, window: tuple[int, int] | None
) -> None:
    plain, declared = both_stores(tmp_path, made_rows(VALUES, 0))
    try:
        assert_declared(declared)
        since, until = window or (None, None)
        where = EventFilter(where=(where_condition(condition),), since_us=since, until_us=until)
        for ascending in (False, True):
            assert _walk(declared, where, ascending) == _walk(plain, where, ascending)
            assert _numbered(declared, where, ascending) == _numbered(plain, where, ascending)
        assert plain.page(1, 1000, where=where).total > 0  # else the comparison proves little
    finally:
        plain.close()
        declared.close()


def test_the_stored_values_answer_the_page(tmp_path: Path) -> None:
    plain, declared = both_stores(tmp_path, made_rows(VALUES, 0))
    try:
        assert_declared(declared)
        where = EventFilter(where=(where_condition("data.p>20"),))
        before = declared.page(1, 1000, where=where)
        declared._write_connection.execute("DELETE FROM property_values WHERE kind = ? AND value > 30", (NUMBER,))
        after = declared.page(1, 1000, where=where)
        assert after.total == len(after.events) < before.total
        assert {json.loads(e.data_json)["p"] for e in after.events} <= set(range(21, 31))
    finally:
        plain.close()
        declared.close()
