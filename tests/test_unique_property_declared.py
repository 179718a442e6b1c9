"""`--unique-property P` is one use of `--property P` (issue 21): P is declared too, so its
unique counts are exact from its stored values and every filter on P reads them; the
sketches answer only what the values cannot answer fast — while P's backfill is incomplete,
under a filter of keys, or over more than EXACT_UNIQUE_MAX_EVENTS events — and say so
(`unique_method: hll`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import orjson
import pytest

import tlytics.store.sqlite.sketches as sqlite_sketches
from tests.helpers import eventually, http_json, three_days_of_visits
from tests.test_unique_sketches import HOUR, T0, hll_of, pg_value_keys, rows, users_between
from tlytics.cli import parse_settings
from tlytics.ingest.filter_language import parse_value
from tlytics.store import EventFilter, SQLiteStore
from tlytics.store.base import exact_unique_counts


def test_a_unique_property_is_declared_whichever_form_names_it() -> None:
    by_flag, _ = parse_settings(["--unique-property", "data.user_id"], {})
    assert by_flag.declared_properties == ("user_id",) and by_flag.unique_properties == ("user_id",)
    by_environment, _ = parse_settings([], {"TLYTICS_UNIQUE_PROPERTIES": "data.user_id, data.team"})
    assert by_environment.declared_properties == ("user_id", "team")
    # With --property: the declared ones first, each property once.
    both, _ = parse_settings(
        ["--property", "data.amount", "--property", "data.user_id", "--unique-property", "data.user_id"],
        {"TLYTICS_UNIQUE_PROPERTIES": "data.team"},
    )
    assert both.declared_properties == ("amount", "user_id")
    mixed, _ = parse_settings(
        [], {"TLYTICS_PROPERTIES": "data.amount", "TLYTICS_UNIQUE_PROPERTIES": "data.team,data.amount"}
    )
    assert mixed.declared_properties == ("amount", "team")


def _sketched_and_declared(path: Path) -> tuple[SQLiteStore, list[Any]]:
    store = SQLiteStore(path, unique_properties=["user"], declared_properties=["user"])
    stored = rows(24_000, users=5_000)
    for start in range(0, len(stored), 4_000):
        store.insert(stored[start : start + 4_000])
    return store, stored


def test_counts_are_exact_from_the_declared_values_within_the_bound(tmp_path: Path) -> None:
    store, stored = _sketched_and_declared(tmp_path / "s.db")
    since, until = T0 + 7 * 60_000_000, T0 + 50 * HOUR + 11_000_000
    window = EventFilter(since_us=since, until_us=until)
    starts = [T0, T0 + 24 * HOUR, T0 + 48 * HOUR]
    got = store.unique_counts(starts, until, window, "user")
    assert got.method == "exact" and got.relative_error is None
    assert got == exact_unique_counts(store, starts, until, window, "user")
    expected = len({orjson.dumps(u) for u in users_between(stored, since, until) if u is not None})
    assert got.total == expected
    # A filter on the property reads its values and agrees with the JSON.
    pro = EventFilter(since_us=since, until_us=until, where=(("user", parse_value("u7")),))
    assert store.page(1, 10, where=pro).total == sum(1 for u in users_between(stored, since, until) if u == "u7")
    store.close()


def test_the_sketches_answer_over_the_bound_under_keys_and_while_the_backfill_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, stored = _sketched_and_declared(tmp_path / "s.db")
    since, until = T0, T0 + 72 * HOUR
    window = EventFilter(since_us=since, until_us=until)
    every_user = hll_of(users_between(stored, since, until))
    assert store.unique_counts([T0], until, window, "user").method == "exact"
    # Over the bound (the range is whole 15-minute buckets: the rollup counts every event in it).
    in_range = sum(1 for _, _, ts, _, _ in stored if since <= ts < until)
    monkeypatch.setattr(sqlite_sketches, "EXACT_UNIQUE_MAX_EVENTS", in_range - 1)
    over = store.unique_counts([T0], until, window, "user")
    assert over.method == "hll" and over.total == every_user
    monkeypatch.setattr(sqlite_sketches, "EXACT_UNIQUE_MAX_EVENTS", in_range)
    assert store.unique_counts([T0], until, window, "user").method == "exact"
    # A filter of keys: the values are not kept per key.
    of_key = EventFilter(since_us=since, until_us=until, keys=("k1",))
    by_key = store.unique_counts([T0], until, of_key, "user")
    assert by_key.method == "hll" and by_key.total == hll_of(users_between(stored, since, until, ("k1",)))
    # While the values are being backfilled, reads cannot use them: the sketches answer.
    with store._write_connection:
        store._write_connection.execute("UPDATE declared_properties SET complete = 0")
    assert store.unique_counts([T0], until, window, "user").method == "hll"
    store.close()


def test_a_property_only_declared_is_counted_exactly_without_sketches(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", declared_properties=["user"])
    stored = rows(3_000, users=700)
    store.insert(stored)
    window = EventFilter(since_us=T0, until_us=T0 + 24 * HOUR)
    got = store.unique_counts([T0], T0 + 24 * HOUR, window, "user")
    assert got.method == "exact" and got.total == store.unique_count(window, "user")
    assert store._write_connection.execute("SELECT count(*) FROM sketch_15m").get == 0
    store.close()


def test_the_server_declares_a_unique_property_and_counts_it_exactly(server_factory: Any) -> None:
    server = server_factory(extra_args=["--unique-property", "data.user"]).start()
    events = three_days_of_visits()
    status, _ = http_json("POST", f"{server.url}/batch", {"events": events}, timeout_s=60)
    assert status == 200
    query = "interval=day&since=2025-01-02T00:00:00Z&until=2025-01-04T00:00:00Z"

    def answered() -> dict[str, Any] | None:
        status, body = http_json("GET", f"{server.url}/stats?{query}&unique=data.user")
        assert status == 200, body
        return body if body["total"] == 2_000 else None

    body = eventually(answered, timeout_s=60, what="the events written")
    assert body["unique_method"] == "exact" and "unique_error" not in body
    assert body["unique_total"] == 700 and [b["unique"] for b in body["buckets"]] == [700, 700]
    status, body = http_json("GET", f"{server.url}/view?where=data.user:u5&since=2025-01-02T00:00:00Z")
    assert status == 200 and body["total"] == 3  # u5: events 5, 705, 1405, 2105, 2805; two before
    server.stop()
    # The writer stored the property's values, complete: every filter on it reads them.
    connection = apsw.Connection(str(server.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert connection.execute("SELECT path, complete FROM declared_properties").fetchall() == [("user", 1)]
        assert connection.execute("SELECT count(*) FROM property_values").get == 3_000
        assert connection.execute("SELECT count(*) FROM sketched_properties").get == 1
    finally:
        connection.close()


def test_postgresql_counts_a_declared_unique_property_exactly_within_the_bound(
    postgres_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tlytics.store.postgres.sketches as postgres_sketches
    from tlytics.store.postgres import PostgresReader, PostgresWriter

    url = postgres_cluster.create_database("unique_declared")
    writer = PostgresWriter(url, node="a", unique_properties=["user"], declared_properties=["user"])
    reader = PostgresReader(url)
    try:
        stored = rows(6_000, users=2_000)
        writer.insert(stored)
        since, until = T0, T0 + 24 * HOUR
        window = EventFilter(since_us=since, until_us=until)
        got = reader.unique_counts([since], until, window, "user")
        assert got.method == "exact" and got.total == reader.unique_count(window, "user")
        monkeypatch.setattr(postgres_sketches, "EXACT_UNIQUE_MAX_EVENTS", 10)
        over = reader.unique_counts([since], until, window, "user")
        assert over.method == "hll" and over.total == hll_of(pg_value_keys(stored, since, until))
        of_key = EventFilter(since_us=since, until_us=until, keys=("k1",))
        monkeypatch.setattr(postgres_sketches, "EXACT_UNIQUE_MAX_EVENTS", 1_000_000)
        assert reader.unique_counts([since], until, of_key, "user").method == "hll"
    finally:
        reader.close()
        writer.close()
        postgres_cluster.drop_database("unique_declared")
