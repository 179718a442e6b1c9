"""The diskcache adapter: the only module using diskcache's internals, checked against the
installed diskcache (these fail on a release whose table or queue keys differ) and refusing a
spool whose layout differs rather than reading or writing it wrongly."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path
from typing import Any

import diskcache
import pytest

from tlytics.errors import SpoolError
from tlytics.spool import Spool, diskcache_adapter
from tlytics.spool.diskcache_adapter import CACHE_COLUMNS, FIRST_QUEUE_KEY, MODE_RAW, QUEUE_MAX_KEY, QUEUE_MIN_KEY

PACKAGE = Path(__file__).resolve().parent.parent / "tlytics"
ADAPTER = PACKAGE / "spool" / "diskcache_adapter.py"


def test_the_installed_diskcache_has_the_table_the_adapter_writes(tmp_path: Path) -> None:
    with diskcache.Cache(str(tmp_path / "fresh")) as cache:
        columns = [(name, kind, pk) for _, name, kind, _, _, pk in cache._sql("PRAGMA table_info(Cache)").fetchall()]
    assert tuple(name for name, _, _ in columns) == CACHE_COLUMNS
    kinds = {name: kind for name, kind, _ in columns}
    # The types the adapter's INSERT and SELECTs rely on.
    assert kinds["rowid"] == "INTEGER" and kinds["store_time"] == "REAL" and kinds["value"] == "BLOB"
    assert [name for name, _, pk in columns if pk] == ["rowid"]


def test_the_installed_diskcache_push_uses_the_queue_keys_the_adapter_appends(tmp_path: Path) -> None:
    directory = tmp_path / "queue"
    with diskcache.Cache(str(directory)) as cache:
        first = cache.push(b"by push")
        assert QUEUE_MIN_KEY < first == FIRST_QUEUE_KEY < QUEUE_MAX_KEY
        assert cache.push(b"by push again") == FIRST_QUEUE_KEY + 1
        rows = cache._sql("SELECT raw, mode, filename, value FROM Cache ORDER BY key").fetchall()
        assert rows == [(1, MODE_RAW, None, b"by push"), (1, MODE_RAW, None, b"by push again")]
    spool = Spool(directory)
    keys = spool.append_many([b"by the adapter", b"and again"])
    assert keys == [FIRST_QUEUE_KEY + 2, FIRST_QUEUE_KEY + 3]
    with diskcache.Cache(str(directory)) as cache:
        # diskcache sees the adapter's entries as its own queue's: in order, counted, and continued.
        assert cache.peek(side="front") == (FIRST_QUEUE_KEY, b"by push")
        assert cache.peek(side="back") == (FIRST_QUEUE_KEY + 3, b"and again")
        assert len(cache) == 4
        assert cache.push(b"by push last") == FIRST_QUEUE_KEY + 4
    assert [value for _, value in spool.peek(10)] == [
        b"by push",
        b"by push again",
        b"by the adapter",
        b"and again",
        b"by push last",
    ]
    spool.close()


def test_a_spool_whose_table_differs_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(b"kept")
    spool.close()
    # What a diskcache release with another table would leave: a column the adapter does not write.
    with sqlite3.connect(directory / "cache.db") as connection:
        connection.execute("ALTER TABLE Cache ADD COLUMN shard INTEGER")
    with pytest.raises(SpoolError, match=r"table Cache.*shard.*requirements\.lock"):
        Spool(directory)
    # Refused, not touched: the entry is still there for a diskcache that matches.
    with sqlite3.connect(directory / "cache.db") as connection:
        assert connection.execute("SELECT value FROM Cache").fetchall() == [(b"kept",)]


def test_a_spool_whose_queue_keys_differ_is_refused_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append_many([b"one", b"two"])
    spool.close()
    real_peek = diskcache.Cache.peek

    def peek_elsewhere(self: diskcache.Cache, *args: Any, **kwargs: Any) -> Any:
        """A diskcache whose queue ends somewhere other than where the adapter looks."""
        key, value = real_peek(self, *args, **kwargs)
        return key + 1, value

    monkeypatch.setattr(diskcache.Cache, "peek", peek_elsewhere)
    with pytest.raises(SpoolError, match="queue's last entry at key"):
        Spool(directory)


def test_only_the_adapter_touches_diskcache_internals() -> None:
    """Every `_sql`, `_con`, `_page_size` and `diskcache` import in tlytics/ is in the adapter."""
    private = {"_sql", "_con", "_page_size"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == ADAPTER:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in private:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(PACKAGE)}:{node.lineno} imports {n}"
                for n in names
                if n.split(".")[0] == "diskcache"
            ]
    assert offenders == []
    assert {"_sql", "_con"} <= {
        node.attr for node in ast.walk(ast.parse(ADAPTER.read_text())) if isinstance(node, ast.Attribute)
    }, "the adapter is the module that holds them"


def test_the_adapter_checks_layout_on_every_spool_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked = []
    monkeypatch.setattr(diskcache_adapter, "check_layout", lambda cache: checked.append(cache.directory))
    Spool(tmp_path / "a").close()
    assert checked == [str(tmp_path / "a")]
