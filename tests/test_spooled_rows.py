"""The writer hands SQLite the spool's decoded events as they are (`SpooledRows`: `unhex()` for
ids, data bytes cast to text): the store must end up byte for byte as the rows converted in
Python leave it, for every JSON spelling, duplicates, ids already stored or erased; entries
whose rows cannot be made are still quarantined alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from msgspec import Raw

from tlytics.spool import Spool
from tlytics.spool.entry import decode_spool_entry, encode_spool_entry, store_rows
from tlytics.store import EventFilter, SQLiteWriter
from tlytics.store.spooled_rows import SpooledRows
from tlytics.writer import WriterResources, drain_batch

# JSON text as the spool holds it (canonical: compact, numbers and escapes as sent).
_NUMBERS = st.sampled_from(
    ["0", "-0", "1E2", "1e-7", "-1.50", "12345678901234567890", "-98765432109876543210123", "3.141592653589793"]
) | st.integers(-(10**20), 10**20).map(str)
_STRINGS = st.lists(
    st.sampled_from(
        ["a", " ", "é", "😀", "\\u00e9", "\\ud83d\\ude00", '\\"', "\\\\", "\\/", "\\n", "\\u0000", "\\t", "本"]
    ),
    max_size=6,
).map(lambda parts: '"' + "".join(parts) + '"')
_SCALARS = _NUMBERS | _STRINGS | st.sampled_from(["true", "false", "null"])
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
        | st.dictionaries(_STRINGS, inner, max_size=4).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs.items()) + "}"
        )
    ),
    max_leaves=12,
)
# A few ids, so a batch repeats some, and some are already stored or erased.
_IDS = st.sampled_from([bytes([n]) * 16 for n in range(12)]).map(bytes.hex)
_EVENT = st.tuples(_IDS, st.sampled_from(["k", "page_view", "é", "😀"]), st.integers(-(2**50), 2**50), _JSON)
_ENTRIES = st.lists(st.tuples(st.integers(0, 2**52), st.lists(_EVENT, max_size=5)), min_size=1, max_size=4)


def spooled(entries: list[tuple[int, list[tuple[str, str, int, str]]]]) -> list[bytes]:
    return [
        encode_spool_entry(received_at, [(i, k, t, Raw(data.encode())) for i, k, t, data in events])
        for received_at, events in entries
    ]


def everything(store: SQLiteWriter) -> dict[str, list[Any]]:
    """Every row the insert keeps, with SQLite's type of the data column."""
    tables = {
        "events": "SELECT id, key, ts, received_at, data, typeof(data) FROM events ORDER BY ts, id",
        "rollup_15m": "SELECT * FROM rollup_15m ORDER BY bucket, key",
        "key_stats": "SELECT * FROM key_stats ORDER BY key",
        "counters": "SELECT * FROM counters",
        "sketches": "SELECT * FROM sketch_15m ORDER BY path, bucket, key",
        "sketches_all": "SELECT * FROM sketch_15m_all_keys ORDER BY path, bucket",
    }
    connection = store._write_connection
    return {name: connection.execute(sql).fetchall() for name, sql in tables.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=_ENTRIES, batch=_ENTRIES, erase=st.booleans())
def test_sqlite_stores_spooled_rows_as_the_converted_rows(
    tmp_path_factory: Any, before: Any, batch: Any, erase: bool
) -> None:
    directory = tmp_path_factory.mktemp("stores")
    stores = [SQLiteWriter(directory / name, unique_properties=["u"]) for name in ("converted.db", "spooled.db")]
    try:
        for store in stores:  # the same history: some ids stored, those of key "k" maybe erased
            store.insert([row for value in spooled(before) for row in store_rows(value)])
            if erase:
                store.delete_matching(EventFilter(keys=("k",)), max_rows=1000, remember_ids=True)
        values = spooled(batch)
        converted, by_sqlite = stores
        inserted = converted.insert([row for value in values for row in store_rows(value)])
        assert by_sqlite.insert(SpooledRows([decode_spool_entry(value) for value in values])) == inserted
        assert everything(by_sqlite) == everything(converted)
    finally:
        for store in stores:
            store.close()


def test_spooled_rows_read_as_the_rows_store_rows_makes() -> None:
    values = spooled([(7, [("ab" * 16, "k", 1, '{"a":1E2}'), ("cd" * 16, "é", -5, '"\\u00e9"')]), (9, [])])
    rows = SpooledRows([decode_spool_entry(value) for value in values])
    expected = [row for value in values for row in store_rows(value)]
    assert len(rows) == 2
    assert list(rows) == expected
    assert rows[1] == expected[1]
    assert list(rows[0:1]) == expected[0:1]


def drain_all(tmp_path: Path, open_spool: Callable[[Path], Spool], values: list[bytes]) -> tuple[SQLiteWriter, Spool]:
    spool = open_spool(tmp_path / "spool")
    quarantine = open_spool(tmp_path / "quarantine")
    store = SQLiteWriter(tmp_path / "store.db")
    spool.append_many(values)
    result = drain_batch(WriterResources(spool, quarantine, lambda: store), 1000, 20_000)
    assert spool.count() == 0
    assert result.entries + result.quarantined == len(values)
    return store, quarantine


def test_an_id_sqlite_cannot_read_quarantines_its_entry_alone(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    good = spooled([(1, [("01" * 16, "k", 1, "{}")])])[0]
    bad_hex = spooled([(2, [("02" * 16, "k", 2, "{}"), ("zz" * 16, "k", 3, "{}")])])[0]
    later = spooled([(3, [("03" * 16, "k", 4, "[1E2]")])])[0]
    store, quarantine = drain_all(tmp_path, open_spool, [good, bad_hex, later])
    assert store._write_connection.execute("SELECT hex(id), data FROM events ORDER BY ts, id").fetchall() == [
        ("01" * 16, "{}"),
        ("03" * 16, "[1E2]"),
    ]
    assert [value for _key, value in quarantine.peek(10)] == [bad_hex]


def test_an_id_python_reads_and_sqlite_does_not_is_stored_as_before(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    # bytes.fromhex skips spaces between digit pairs; unhex() does not: converted in Python then.
    spaced = "ab " + "cd" * 15
    values = spooled([(1, [(spaced, "k", 1, "{}"), ("ef" * 16, "k", 2, "1")])])
    store, quarantine = drain_all(tmp_path, open_spool, values)
    stored = store._write_connection.execute("SELECT hex(id), received_at, data FROM events ORDER BY ts, id").fetchall()
    assert stored == [("AB" + "CD" * 15, 1, "{}"), ("EF" * 16, 1, "1")]
    assert quarantine.count() == 0


def test_data_that_is_not_utf8_quarantines_its_entry(tmp_path: Path, open_spool: Callable[[Path], Spool]) -> None:
    good = spooled([(1, [("01" * 16, "k", 1, '"é"')])])[0]
    not_utf8 = good.replace(b"01" * 16, b"02" * 16).replace("é".encode(), b"\xff")
    store, quarantine = drain_all(tmp_path, open_spool, [good, not_utf8])
    assert store._write_connection.execute("SELECT data FROM events").fetchall() == [('"é"',)]
    assert [value for _key, value in quarantine.peek(10)] == [not_utf8]
