"""A declared property's backfill outlives a failed chunk (the store locked by another process
past the busy timeout, say): it is tried again from where it left off, and the property comes
to answer from its values without a restart. It used to stop for good until the next start,
every read of the property parsing the JSON meanwhile."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw
import psycopg
import pytest
from structlog.testing import capture_logs

from tests.postgres_cluster import PostgresCluster
from tests.test_declared_properties import PostgresStore, made_amounts, pg_complete
from tlytics.ingest.query import where_condition
from tlytics.store import EventFilter, SQLiteStore
from tlytics.store.postgres import declared as postgres_declared
from tlytics.store.sqlite import property_backfill
from tlytics.store.sqlite.properties import complete_properties


def _failed_then_done(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The logged events, checked to hold a failed backfill and, after it, the backfill done."""
    events = [log["event"] for log in logs]
    assert "property_backfill_failed" in events
    assert events.index("property_backfill_failed") < events.index("property_backfill_done")
    return events


def test_a_backfill_chunk_that_fails_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.insert(made_amounts(range(3_000)))
    store.close()
    real_chunk = property_backfill.PropertyBackfill._chunk
    failures = [apsw.BusyError("database is locked")]

    def chunk_failing_once(self: Any, size: int) -> bool:
        if failures:
            raise failures.pop()
        return real_chunk(self, size)

    monkeypatch.setattr(property_backfill.PropertyBackfill, "_chunk", chunk_failing_once)
    with capture_logs() as logs:
        declaring = SQLiteStore(path, declared_properties=["amount"])
        try:
            assert declaring.wait_backfilled(60)
            assert "amount" in complete_properties(declaring._read_connection())
            where = EventFilter(where=(where_condition("data.amount>=2990"),))
            assert declaring.page(1, 20, where=where).total == 10
        finally:
            declaring.close()
    events = _failed_then_done(logs)
    assert events.count("property_backfill_started") == 1


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = f"backfill_retry_{uuid.uuid4().hex[:8]}"
    yield postgres_cluster.create_database(name)
    postgres_cluster.drop_database(name)


def test_a_postgresql_backfill_that_fails_is_tried_again(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PostgresStore(pg_url)
    store.insert(made_amounts(range(3_000)))
    store.close()
    real_backfill = postgres_declared.Backfill._backfill
    failures = [psycopg.OperationalError("the connection was closed (PostgreSQL restarted)")]

    def backfill_failing_once(self: Any, *args: Any) -> None:
        if failures:
            raise failures.pop()
        real_backfill(self, *args)

    monkeypatch.setattr(postgres_declared.Backfill, "_backfill", backfill_failing_once)
    with capture_logs() as logs:
        declaring = PostgresStore(pg_url, declared_properties=["amount"])
        try:
            assert declaring.wait_backfilled(60) and pg_complete(pg_url) == {"amount"}
            where = EventFilter(where=(where_condition("data.amount>=2990"),))
            assert declaring.page(1, 20, where=where).total == 10
        finally:
            declaring.close()
    _failed_then_done(logs)
