"""A reader closed in another process (a tool, a test, a server stopping) while the writer is
inside a transaction leaves that transaction able to write: closing once ran a checkpoint
that reset the WAL under the writer's read snapshot, and its next write failed at once with
"database is locked" (a declared property's backfill stopped for good on it)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from tlytics.store import SQLiteReader, SQLiteStore


def _rows(first: int, count: int) -> list[tuple[bytes, str, int, int, str]]:
    return [
        (uuid.UUID(int=n).bytes, "k", 1_000_000 + n, 1_000_000 + n, f'{{"n":{n}}}') for n in range(first, first + count)
    ]


def _read_and_close_elsewhere(db_path: Path) -> None:
    """Open a reader in another process, read, close it."""
    script = "import sys; from tlytics.store import SQLiteReader; r = SQLiteReader(sys.argv[1]); r.count(); r.close()"
    subprocess.run([sys.executable, "-c", script, str(db_path)], check=True, timeout=120)


def test_a_reader_closed_elsewhere_does_not_fail_the_writers_transaction(tmp_path: Path) -> None:
    db_path = tmp_path / "a.db"
    store = SQLiteStore(db_path)
    try:
        store.insert(_rows(1, 100))
        connection = store._write_connection  # the writer's own, as the backfill's chunks use it
        _read_and_close_elsewhere(db_path)  # as a reader's close before (the WAL folded, say)
        with connection:
            seen = connection.execute("SELECT count(*) FROM events").get  # the transaction's snapshot
            _read_and_close_elsewhere(db_path)
            connection.execute("UPDATE counters SET value = value WHERE name = 'events'")  # its first write
        assert seen == 100
        store.insert(_rows(101, 5))
    finally:
        store.close()
    reader = SQLiteReader(db_path)
    try:
        assert reader.count() == 105
    finally:
        reader.close()
