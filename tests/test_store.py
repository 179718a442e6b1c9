"""The APSW store: migrations, idempotent inserts, counts and newest-first pages."""

from __future__ import annotations

import uuid
from pathlib import Path

import apsw
import pytest

from tlytics.errors import StoreError
from tlytics.store import SQLiteStore
from tlytics.store.sqlite import SCHEMA_VERSION


def row(n: int, ts: int, key: str = "k") -> tuple[bytes, str, int, int, str]:
    return (uuid.UUID(int=n).bytes, key, ts, ts, f'{{"n": {n}}}')


def test_open_migrates_and_uses_wal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    assert store.schema_version == SCHEMA_VERSION >= 1
    store.close()
    connection = apsw.Connection(str(tmp_path / "a.db"))
    assert connection.pragma("journal_mode") == "wal"
    assert connection.pragma("user_version") == SCHEMA_VERSION


def test_insert_is_idempotent_and_counts_new_rows(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    assert store.insert([row(1, 10), row(2, 20), row(1, 10)]) == 2
    assert store.insert([row(2, 20), row(3, 30)]) == 1
    assert store.count() == 3
    store.close()
    reopened = SQLiteStore(tmp_path / "a.db")
    assert reopened.count() == 3
    assert reopened.insert([row(3, 30)]) == 0


def test_page_orders_newest_first_and_pages(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    store.insert([row(n, ts=n // 2) for n in range(1, 8)])
    first = store.page(1, 3)
    assert first.total == 7
    assert [e.id for e in first.events] == [str(uuid.UUID(int=n)) for n in (7, 6, 5)]
    assert [e.data_json for e in store.page(3, 3).events] == ['{"n": 1}']
    assert store.page(4, 3).events == []


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    connection = apsw.Connection(str(tmp_path / "a.db"))
    connection.pragma("user_version", SCHEMA_VERSION + 1)
    connection.close()
    with pytest.raises(StoreError, match="newer than this Tlytics"):
        SQLiteStore(tmp_path / "a.db")


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "dir.db")
