"""HyperLogLog sketches of the properties declared with `--unique-property` (issue 14), in the
SQLite store and through a real server: a sketched answer is exactly what one HLL over exactly
the events in range gives (whole 15-minute buckets from the sketches, ragged edges from the
events), whatever was inserted twice, erased, expired or backfilled on the way."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import eventually, http_json, three_days_of_visits
from tlytics.cli import parse_settings
from tlytics.ingest.filter_language import parse_value
from tlytics.store import EventFilter, SQLiteStore, StoreRow, sketch
from tlytics.store.base import exact_unique_counts

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z, µs
MINUTE = 60_000_000
HOUR = 60 * MINUTE


def rows(count: int, users: int, *, salt: str = "") -> list[StoreRow]:
    """Events 11 s apart (about 3 days for 24,000), three keys, users typed every way."""
    made = []
    for n in range(count):
        user: Any = f"u{n % users}{salt}"
        if n % 5 == 0:
            user = n % users  # numbers: 7 and "7" are two users
        data = {"user": user, "group": n % users % 2} if n % 101 else {"group": 3}
        made.append((uuid.UUID(int=n).bytes, f"k{n % 3}", T0 + n * 11_000_000, T0, orjson.dumps(data).decode()))
    return made


def hll_of(values: Iterable[Any]) -> int:
    """What one sketch of exactly these values (JSON values as the store's SQL reads them) estimates."""
    union = sketch.Union()
    hashes = (sketch.value_hash(value) for value in values)
    union.add_hashes(hashed for hashed in hashes if hashed is not None)
    return union.estimate()


def users_between(stored: Sequence[StoreRow], low: int, high: int, keys: tuple[str, ...] = ()) -> list[Any]:
    return [
        orjson.loads(data).get("user")
        for _, key, ts, _, data in stored
        if low <= ts < high and (not keys or key in keys)
    ]


def pg_value_keys(stored: Sequence[StoreRow], low: int, high: int) -> list[str | None]:
    """The users between low and high as PostgreSQL's tlytics_value_key spells them: "s" and the
    text for a string, "n" and the number for a number."""
    users = users_between(stored, low, high)
    return [None if u is None else f"s{u}" if isinstance(u, str) else f"n{u}" for u in users]


def test_a_sketched_answer_is_one_hll_over_exactly_the_events_in_range(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", unique_properties=["user"])
    stored = rows(24_000, users=15_000)
    store.insert(stored)
    # Hours starting at :07:13, so every bucket has ragged edges on both sides.
    since, until = T0 + 7 * MINUTE + 13_000_000, T0 + 70 * HOUR + 5_000_000
    starts = [since + i * 6 * HOUR for i in range(12)]
    for keys in ((), ("k1", "k2")):
        window = EventFilter(keys=keys, since_us=since, until_us=until)
        got = store.unique_counts(starts, until, window, "user")
        assert got.method == "hll"
        assert got.relative_error == sketch.RELATIVE_ERROR
        edges = [*starts, until]
        expected = [hll_of(users_between(stored, low, high, keys)) for low, high in itertools.pairwise(edges)]
        assert got.per_bucket == expected
        assert got.total == hll_of(users_between(stored, since, until, keys))
        exact = exact_unique_counts(store, starts, until, window, "user").total
        assert abs(got.total - exact) <= 3 * sketch.RELATIVE_ERROR * exact
    store.close()


def test_small_counts_and_value_types_are_as_the_exact_count_has_them(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", unique_properties=["user"])
    users: list[Any] = [1, 1.0, "1", True, None, "a", "a", {"id": 1}, [1]]
    store.insert(
        [(uuid.UUID(int=n).bytes, "k", T0 + n, T0, orjson.dumps({"user": u}).decode()) for n, u in enumerate(users)]
    )
    store.insert([(uuid.UUID(int=99).bytes, "k", T0, T0, "{}")])
    whole = EventFilter(since_us=T0, until_us=T0 + HOUR)
    got = store.unique_counts([T0], T0 + HOUR, whole, "user")
    assert got.method == "hll"
    assert got.total == store.unique_count(whole, "user") == 5
    store.close()


def test_erasure_and_retention_leave_the_sketches_of_the_events_that_remain(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", unique_properties=["user"])
    store.insert(rows(24_000, users=15_000))
    store.insert(rows(24_000, users=15_000, salt="-again"))  # duplicate ids: ignored
    erase = EventFilter(where=(("group", parse_value("1")),))
    assert store.delete_matching(erase, max_rows=100_000, remember_ids=True) > 0
    assert store.delete_matching(EventFilter(until_us=T0 + 20 * HOUR + 7), max_rows=100_000, remember_ids=False) > 0
    # A store that only ever held what remains, sketched by a backfill as it opens.
    remaining = [r for r in rows(24_000, users=15_000) if r[2] >= T0 + 20 * HOUR + 7]
    remaining = [r for r in remaining if orjson.loads(r[4])["group"] != 1]
    fresh = SQLiteStore(tmp_path / "fresh.db")
    fresh.insert(remaining)
    fresh.close()
    fresh = SQLiteStore(tmp_path / "fresh.db", unique_properties=["user"])
    starts = [T0 + i * 24 * HOUR for i in range(4)]
    for keys in ((), ("k0",)):
        window = EventFilter(keys=keys, since_us=T0, until_us=T0 + 96 * HOUR)
        got = store.unique_counts(starts, T0 + 96 * HOUR, window, "user")
        assert got.method == "hll"
        assert got == fresh.unique_counts(starts, T0 + 96 * HOUR, window, "user")
        assert got.per_bucket[0] == hll_of(users_between(remaining, T0, T0 + 24 * HOUR, keys))
    store.close()
    fresh.close()


def test_a_property_no_longer_declared_is_counted_exactly(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SQLiteStore(path, unique_properties=["user"]).close()
    store = SQLiteStore(path)  # a tool or a migration keeps what the server declared
    store.insert(rows(3_000, users=1_000))
    window = EventFilter(since_us=T0, until_us=T0 + 24 * HOUR)
    assert store.unique_counts([T0], T0 + 24 * HOUR, window, "user").method == "hll"
    store.close()
    store = SQLiteStore(path, unique_properties=[])
    got = store.unique_counts([T0], T0 + 24 * HOUR, window, "user")
    assert got.method == "exact" and got.total == store.unique_count(window, "user")
    store.close()


def test_the_server_answers_declared_properties_from_sketches(server_factory: Any) -> None:
    """Under a filter of keys (the declared values that count a --unique-property exactly are
    not kept per key: tests/test_unique_property_declared.py), the sketches answer."""
    server = server_factory(extra_args=["--unique-property", "data.user"]).start()
    events = three_days_of_visits()
    status, _ = http_json("POST", f"{server.url}/batch", {"events": events}, timeout_s=60)
    assert status == 200
    query = "interval=day&since=2025-01-02T00:00:00Z&until=2025-01-04T00:00:00Z&compare=previous&key=visit"

    def answered() -> dict[str, Any] | None:
        status, body = http_json("GET", f"{server.url}/stats?{query}&unique=data.user")
        assert status == 200, body
        return body if body["total"] == 2_000 else None

    body = eventually(answered, timeout_s=60, what="the events written")
    assert body["unique_method"] == "hll" and body["unique_error"] == sketch.RELATIVE_ERROR
    every_user = hll_of(f"u{n}" for n in range(700))  # 694: within 3 standard errors of 700
    assert abs(every_user - 700) <= 3 * sketch.RELATIVE_ERROR * 700
    assert [bucket["unique"] for bucket in body["buckets"]] == [every_user, every_user]
    assert body["unique_total"] == every_user
    previous = body["previous"]
    assert previous["unique_method"] == "hll" and previous["unique_total"] == every_user
    # Not declared: exact, and no error to state.
    status, body = http_json("GET", f"{server.url}/stats?{query}&unique=data.plan")
    assert status == 200
    assert body["unique_method"] == "exact" and "unique_error" not in body and body["unique_total"] == 2
    # A property condition: exact too (a sketch holds every event of its bucket).
    status, body = http_json("GET", f"{server.url}/stats?{query}&unique=data.user&where=data.plan:pro")
    assert status == 200
    assert body["unique_method"] == "exact" and body["unique_total"] == 350 and body["total"] == 1_000
    assert [bucket["unique"] for bucket in body["buckets"]] == [350, 350]
    server.stop()


def test_a_unique_property_must_be_a_data_property(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--unique-property", "user_id"], {})
    assert "data.<property>" in capsys.readouterr().err
    settings, _ = parse_settings([], {"TLYTICS_UNIQUE_PROPERTIES": "data.a, data.b.c"})
    assert settings.unique_properties == ("a", "b.c")


def test_postgresql_nodes_sketch_into_rows_of_their_own_and_reads_merge_them(postgres_cluster: Any) -> None:
    import psycopg

    from tlytics.store.postgres import PostgresReader, PostgresWriter

    url = postgres_cluster.create_database("sketch_nodes")
    # Only node a declares the property: b feeds it all the same once it is listed.
    node_a = PostgresWriter(url, node="a", unique_properties=["user"])
    node_b = PostgresWriter(url, node="b")
    reader = PostgresReader(url)
    try:
        stored = rows(9_000, users=6_000)
        node_a.insert(stored[:10])
        for start in range(0, len(stored), 500):  # both nodes get every event (retries)
            node_b.insert(stored[start : start + 500])
            node_a.insert(stored[start : start + 500])
        with psycopg.connect(url) as connection:
            nodes = {row[0] for row in connection.execute("SELECT DISTINCT node FROM sketch_15m").fetchall()}
        assert nodes == {"a", "b"}

        since, until = T0 + 7 * MINUTE, T0 + 27 * HOUR + 11_000_000
        window = EventFilter(since_us=since, until_us=until)
        starts = [T0, T0 + 24 * HOUR]
        got = reader.unique_counts(starts, until, window, "user")
        assert got.method == "hll"
        assert got.per_bucket == [
            hll_of(pg_value_keys(stored, since, T0 + 24 * HOUR)),
            hll_of(pg_value_keys(stored, T0 + 24 * HOUR, until)),
        ]
        assert got.total == hll_of(pg_value_keys(stored, since, until))
        # An erasure on node b rebuilds node a's rows too.
        node_b.delete_matching(EventFilter(where=(("group", parse_value("1")),)), max_rows=100_000, remember_ids=True)
        kept = [r for r in stored if orjson.loads(r[4])["group"] != 1]
        assert reader.unique_counts(starts, until, window, "user").total == hll_of(pg_value_keys(kept, since, until))
    finally:
        for opened in (reader, node_b, node_a):
            opened.close()
        postgres_cluster.drop_database("sketch_nodes")


def test_postgresql_backfills_in_chunks_as_the_inserts_would_have(
    postgres_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlytics.store.postgres import PostgresReader, PostgresWriter, sketches

    # Chunks and writes far smaller than the buckets: a bucket's values span several chunks.
    monkeypatch.setattr(sketches, "_BACKFILL_CHUNK", 97)
    monkeypatch.setattr(sketches, "_WRITE_EVERY", 5)
    url = postgres_cluster.create_database("sketch_backfill")
    before = PostgresWriter(url, node="a")
    reader = PostgresReader(url)
    declaring: PostgresWriter | None = None
    try:
        stored = rows(3_000, users=2_000)
        before.insert(stored[:-1])
        declaring = PostgresWriter(url, node="b", unique_properties=["user"])
        declaring.insert(stored[-1:])  # its first insert backfills first
        since, until = T0, T0 + 10 * HOUR
        starts = [since + i * HOUR for i in range(10)]
        got = reader.unique_counts(starts, until, EventFilter(since_us=since, until_us=until), "user")
        assert got.method == "hll"
        edges = [*starts, until]
        expected = [hll_of(pg_value_keys(stored, low, high)) for low, high in itertools.pairwise(edges)]
        assert got.per_bucket == expected
        assert got.total == hll_of(pg_value_keys(stored, since, until))
    finally:
        for opened in (reader, before, declaring):
            if opened is not None:
                opened.close()
        postgres_cluster.drop_database("sketch_backfill")
