"""The SQLite writer's direct insert across erasures and reopenings: batches with ids repeated
inside them and across them, timestamps at bucket edges on both sides of the epoch, ids erased
then sent again (in the same writer, and in a writer opened afterwards, which must learn of the
erasure from the store), and retention's deletions; after every step the counter, the rollups
and the key stats equal a brute-force recount of the events, no erased id is stored, and each
stored event is the first one sent with its id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from msgspec import Raw

from tlytics.spool.entry import decode_spool_entry, encode_spool_entry
from tlytics.store import EventFilter, SQLiteWriter
from tlytics.store.spooled_rows import SpooledRows
from tlytics.store.sqlite.schema import BUCKET_SQL, BUCKET_US

_IDS = st.integers(0, 30).map(lambda n: bytes([n]) * 16)
_TIMESTAMPS = st.integers(-2, 2).flatmap(
    lambda bucket: st.sampled_from([bucket * BUCKET_US - 1, bucket * BUCKET_US, bucket * BUCKET_US + 1])
)
_EVENT = st.tuples(_IDS, st.sampled_from(["k", "j", "é"]), _TIMESTAMPS, st.integers(0, 3))
_STEP = st.one_of(
    st.tuples(st.just("insert"), st.lists(_EVENT, max_size=10)),
    st.tuples(st.just("erase"), st.sampled_from(["k", "j", "é"])),
    st.tuples(st.just("retain"), _TIMESTAMPS),
    st.tuples(st.just("reopen"), st.none()),
)

RECOUNT = {
    "counter": ("SELECT value FROM counters WHERE name = 'events'", "SELECT count(*) FROM events"),
    "rollups": (
        "SELECT key, bucket, count FROM rollup_15m ORDER BY 1, 2",
        f"SELECT key, {BUCKET_SQL}, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    # A retention may leave a key counted 0 (readers skip it: a key keeps when it was first seen).
    "key counts": (
        "SELECT key, count FROM key_stats WHERE count > 0 ORDER BY 1",
        "SELECT key, count(*) FROM events GROUP BY 1 ORDER BY 1",
    ),
}


def _inserted(store: SQLiteWriter, events: list[tuple[bytes, str, int, int]]) -> int:
    value = encode_spool_entry(7, [(i.hex(), k, t, Raw(f'{{"v":{v}}}'.encode())) for i, k, t, v in events])
    return store.insert(SpooledRows([decode_spool_entry(value)]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=8))
def test_direct_inserts_erasures_and_reopenings_keep_the_rollups_exact(tmp_path_factory: Any, steps: list[Any]) -> None:
    path: Path = tmp_path_factory.mktemp("store") / "s.db"
    store = SQLiteWriter(path)
    first_sent: dict[bytes, tuple[str, int, int]] = {}
    erased: set[bytes] = set()
    try:
        for action, argument in steps:
            if action == "insert":
                before = store._write_connection.execute("SELECT count(*) FROM events").get
                inserted = _inserted(store, argument)
                assert store._write_connection.execute("SELECT count(*) FROM events").get == before + inserted
                for event_id, key, ts, v in argument:
                    first_sent.setdefault(event_id, (key, ts, v))
            elif action == "erase":
                connection = store._write_connection
                erased |= {row[0] for row in connection.execute("SELECT id FROM events WHERE key = ?", (argument,))}
                store.delete_matching(EventFilter(keys=(argument,)), max_rows=1000, remember_ids=True)
            elif action == "retain":
                # Retention forgets its events' ids: sent again, they are stored anew.
                for (event_id,) in store._write_connection.execute("SELECT id FROM events WHERE ts < ?", (argument,)):
                    del first_sent[event_id]
                store.delete_matching(EventFilter(until_us=argument), max_rows=1000, remember_ids=False)
            else:
                store.close()
                store = SQLiteWriter(path)
            connection = store._write_connection
            for name, (kept, recounted) in RECOUNT.items():
                assert connection.execute(kept).fetchall() == connection.execute(recounted).fetchall(), name
            for event_id, key, ts, data in connection.execute("SELECT id, key, ts, data FROM events"):
                assert event_id not in erased
                assert (key, ts, data) == (
                    first_sent[event_id][0],
                    first_sent[event_id][1],
                    f'{{"v":{first_sent[event_id][2]}}}',
                )
    finally:
        store.close()
