"""The write side of the SQLite store: inserts and deletions, each one transaction that also
keeps the event counter and the rollups (`rollup_15m`, `key_stats`) in step with the events.

It holds the store's only write connection and is used by the writer alone, one call at a
time. The event count lives in a counter row updated with the rows, because `count(*)` on
millions of rows is a full index scan on every `/view`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import apsw

from tlytics.chunks import chunks
from tlytics.errors import StoreError
from tlytics.store.base import EventFilter, StoreRow
from tlytics.store.sqlite.connection import Synchronous, store_errors
from tlytics.store.sqlite.filters import sql_where
from tlytics.store.sqlite.schema import BUCKET_SQL, open_migrated, schema_version
from tlytics.store.sqlite.sketches import SketchKeeper

INSERT = "INSERT INTO events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
BUMP_COUNT = "UPDATE counters SET value = value + ? WHERE name = 'events'"
# The rollups of the rows a transaction added after `seq` ? (duplicates were not added),
# aggregated in SQLite: the rollups always agree with the events table.
ROLL_UP_NEW_ROWS = (
    f"INSERT INTO rollup_15m (key, bucket, count) SELECT key, {BUCKET_SQL}, count(*) FROM events"
    " WHERE seq > ? GROUP BY 1, 2 ON CONFLICT (bucket, key) DO UPDATE SET count = count + excluded.count"
)
KEY_STATS_NEW_ROWS = (
    "INSERT INTO key_stats (key, count, first_ts, last_ts) SELECT key, count(*), min(ts), max(ts) FROM events"
    " WHERE seq > ? GROUP BY key ON CONFLICT (key) DO UPDATE SET count = count + excluded.count,"
    " first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)"
)


class SQLiteWriter:
    """The write side of the store on one SQLite file; opening it runs the migrations."""

    def __init__(
        self, path: str | Path, *, synchronous: Synchronous = "normal", unique_properties: Sequence[str] | None = None
    ) -> None:
        self.path = str(path)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"opening store {self.path} failed: {exc}") from exc
        self._write_connection = open_migrated(self.path, synchronous)
        # Erasures are rare: the writer keeps their ids in memory and filters inserts in
        # Python, which costs nothing while there are none (a trigger cost 28% of inserts).
        with store_errors(f"reading the erased ids of {self.path}"):
            self._erased: set[bytes] = {row[0] for row in self._write_connection.execute("SELECT id FROM erased_ids")}
            # HyperLogLog sketches of the --unique-property properties (backfilled here if new;
            # None keeps those the store has, for tools and migrations).
            self._sketches = SketchKeeper(self._write_connection, unique_properties)

    @property
    def schema_version(self) -> int:
        return schema_version(self._write_connection)

    def insert(self, rows: Sequence[StoreRow]) -> int:
        if self._erased:
            rows = [row for row in rows if row[0] not in self._erased]
        connection = self._write_connection
        with store_errors(f"insert of {len(rows)} events"), connection:
            last_seq = connection.execute("SELECT max(seq) FROM events").get or 0
            before = connection.total_changes()
            connection.executemany(INSERT, rows)
            inserted = int(connection.total_changes() - before)
            if inserted:
                connection.execute(BUMP_COUNT, (inserted,))
                connection.execute(ROLL_UP_NEW_ROWS, (last_seq,))
                connection.execute(KEY_STATS_NEW_ROWS, (last_seq,))
                self._sketches.add_new_rows(last_seq)
        return inserted

    def delete_matching(self, where: EventFilter, *, max_rows: int, remember_ids: bool) -> int:
        """Delete up to `max_rows` matching events in one transaction; return how many.

        With `remember_ids` (erasure), their ids are kept so they are never stored again.
        """
        matching = sql_where(where)
        connection = self._write_connection
        with store_errors(f"delete of up to {max_rows} events"), connection:
            ids: list[bytes] = [
                row[0]
                for row in connection.execute(
                    f"SELECT id FROM events{matching.sql} LIMIT ?", [*matching.params, max_rows]
                )
            ]
            if not ids:
                return 0
            self._roll_down(ids)
            touched = self._sketches.touched(ids)
            connection.executemany("DELETE FROM events WHERE id = ?", [(event_id,) for event_id in ids])
            self._sketches.rebuild(touched)  # a sketch cannot forget a value: rebuilt from what remains
            connection.execute(BUMP_COUNT, (-len(ids),))
            if remember_ids:
                connection.executemany(
                    "INSERT OR IGNORE INTO erased_ids (id) VALUES (?)", [(event_id,) for event_id in ids]
                )
        if remember_ids:
            self._erased.update(ids)
        return len(ids)

    def _roll_down(self, ids: Sequence[bytes]) -> None:
        """Take events about to be deleted out of the rollups (inside the delete's transaction).

        key_stats keeps first_ts/last_ts: they say when a key was first and last seen, which
        stays true after its events are deleted.
        """
        connection = self._write_connection
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            for key, bucket, count in connection.execute(
                f"SELECT key, {BUCKET_SQL}, count(*) FROM events WHERE id IN ({marks}) GROUP BY 1, 2", chunk
            ).fetchall():
                connection.execute(
                    "UPDATE rollup_15m SET count = count - ? WHERE bucket = ? AND key = ?", (count, bucket, key)
                )
                connection.execute("UPDATE key_stats SET count = count - ? WHERE key = ?", (count, key))
        connection.execute("DELETE FROM rollup_15m WHERE count <= 0")

    def close(self) -> None:
        try:
            self._write_connection.close()
        except apsw.Error:
            pass  # closing is best effort: the file stays consistent either way (WAL)
