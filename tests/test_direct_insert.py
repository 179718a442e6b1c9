"""The SQLite writer's direct insert (rows straight into the events, rollups counted in Python
once per batch) must leave the store exactly as the staged insert does (a temporary table,
sorted and grouped in SQLite), which the writer still takes for sketches, declared properties,
erased ids and batches holding an id stored already or twice: same events, each id once (the
first of a batch), same counter, rollups and key stats, whatever the order of the batch and on
both sides of the epoch."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from msgspec import Raw

from tlytics.spool.entry import decode_spool_entry, encode_spool_entry, store_rows
from tlytics.store import SQLiteWriter
from tlytics.store.spooled_rows import SpooledRows
from tlytics.store.sqlite.schema import BUCKET_US

# A few ids, so a batch repeats some and some are stored already.
_IDS = st.sampled_from([bytes([n]) * 16 for n in range(40)]).map(bytes.hex)
# Timestamps around bucket edges and the epoch, in any order.
_TIMESTAMPS = st.integers(-3, 3).flatmap(
    lambda bucket: st.integers(bucket * BUCKET_US - 2, bucket * BUCKET_US + 2) | st.just(bucket * BUCKET_US + 7)
)
_EVENT = st.tuples(_IDS, st.sampled_from(["k", "page_view", "é"]), _TIMESTAMPS, st.sampled_from(["{}", '{"a":1}']))
_ENTRIES = st.lists(st.tuples(st.integers(0, 2**52), st.lists(_EVENT, max_size=8)), min_size=1, max_size=4)

STATE = {
    "events": "SELECT id, key, ts, received_at, data FROM events ORDER BY ts, id",
    "rollup_15m": "SELECT key, bucket, count FROM rollup_15m ORDER BY bucket, key",
    "key_stats": "SELECT * FROM key_stats ORDER BY key",
    "counters": "SELECT * FROM counters",
}


def spooled(entries: list[tuple[int, list[tuple[str, str, int, str]]]]) -> list[bytes]:
    return [
        encode_spool_entry(received_at, [(i, k, t, Raw(data.encode())) for i, k, t, data in events])
        for received_at, events in entries
    ]


def state(store: SQLiteWriter) -> dict[str, list[Any]]:
    connection = store._write_connection
    return {name: connection.execute(sql).fetchall() for name, sql in STATE.items()}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_ENTRIES, min_size=1, max_size=4), as_spooled=st.booleans())
def test_the_direct_insert_leaves_the_store_as_the_staged_insert(
    tmp_path_factory: Any, batches: list[Any], as_spooled: bool
) -> None:
    directory = tmp_path_factory.mktemp("stores")
    direct = SQLiteWriter(directory / "direct.db")
    # A sketched property makes every insert of this store take the staged path.
    staged = SQLiteWriter(directory / "staged.db", unique_properties=["a"])
    try:
        for batch in batches:
            values = spooled(batch)
            rows = [row for value in values for row in store_rows(value)]
            expected = staged.insert(rows)
            got = direct.insert(SpooledRows([decode_spool_entry(value) for value in values]) if as_spooled else rows)
            assert got == expected
            assert state(direct) == state(staged)
        # The rollups agree with the events themselves, too.
        connection = direct._write_connection
        assert (
            state(direct)["rollup_15m"]
            == connection.execute(
                f"SELECT key, ts / {BUCKET_US} - (ts < 0 AND ts % {BUCKET_US} != 0) AS bucket, count(*) FROM events"
                " GROUP BY 1, 2 ORDER BY bucket, key"
            ).fetchall()
        )
    finally:
        direct.close()
        staged.close()


def test_a_batch_out_of_time_order_is_counted_in_its_buckets_and_key_bounds(tmp_path: Any) -> None:
    store = SQLiteWriter(tmp_path / "store.db")
    try:
        late, early = 5 * BUCKET_US + 1, -BUCKET_US - 1
        rows = [
            (bytes([1]) * 16, "k", late, 0, "{}"),
            (bytes([2]) * 16, "k", early, 0, "{}"),
            (bytes([3]) * 16, "j", 0, 0, "{}"),
            (bytes([4]) * 16, "k", late, 0, "{}"),
        ]
        assert store.insert(rows) == 4
        connection = store._write_connection
        assert connection.execute("SELECT key, bucket, count FROM rollup_15m ORDER BY bucket, key").fetchall() == [
            ("k", -2, 1),
            ("j", 0, 1),
            ("k", 5, 2),
        ]
        assert connection.execute("SELECT * FROM key_stats ORDER BY key").fetchall() == [
            ("j", 1, 0, 0),
            ("k", 3, early, late),
        ]
        # The same rows again, and one new: only the new one is stored and counted.
        again = [*rows, (bytes([5]) * 16, "j", early, 0, "{}")]
        assert store.insert(again) == 1
        assert connection.execute("SELECT * FROM key_stats ORDER BY key").fetchall() == [
            ("j", 2, early, 0),
            ("k", 3, early, late),
        ]
        assert connection.execute("SELECT value FROM counters WHERE name = 'events'").get == 5
    finally:
        store.close()
