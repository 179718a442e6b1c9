"""The write side of the SQLite store: inserts and deletions, each one transaction that also
keeps the event counter and the rollups (`rollup_15m`, `key_stats`) in step with the events.

It holds the store's only write connection and is used by the writer alone, one call at a
time. The event count lives in a counter row updated with the rows, because `count(*)` on
millions of rows is a full index scan on every `/view`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import apsw

from tlytics.chunks import chunks
from tlytics.errors import StoreError
from tlytics.store.base import EventFilter, StoreRow
from tlytics.store.spooled_rows import SpooledRows
from tlytics.store.sqlite.batch_rollups import KEY_STATS_COUNTED, ROLL_UP_COUNTED, counted_rollups, sort_by_time
from tlytics.store.sqlite.connection import Synchronous, store_errors
from tlytics.store.sqlite.filters import sql_where
from tlytics.store.sqlite.properties import PropertyKeeper
from tlytics.store.sqlite.schema import BUCKET_SQL, BUCKET_US, open_migrated, schema_version
from tlytics.store.sqlite.sketches import SketchKeeper

# The staged insert (when the direct one, SQLiteWriter._insert_direct, cannot be exact) first
# appends its rows to a temporary table, then moves them into the events in (ts, id) order;
# the staged rows, once those already stored, erased or repeated in the batch are dropped, are
# exactly the transaction's new events, from which the rollups, the sketches and the declared
# properties are kept (the events have no insertion order to find them by).
STAGING_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS new_events (id BLOB NOT NULL, key TEXT NOT NULL,"
    " ts INTEGER NOT NULL, received_at INTEGER NOT NULL, data TEXT NOT NULL)"
)
CLEAR_STAGED = "DELETE FROM temp.new_events"
STAGE = "INSERT INTO temp.new_events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?)"
# SpooledRows as decoded, (id as hex digits, key, timestamp µs, data as raw JSON bytes,
# received_at): SQLite reads the hex digits and takes the data's bytes as its text, so the
# writer makes no Python object per event for either (see tlytics.store.spooled_rows). An id
# SQLite cannot read as hex becomes NULL, which the NOT NULL column refuses: converted in Python.
STAGE_SPOOLED = (
    "INSERT INTO temp.new_events (id, key, ts, received_at, data) VALUES (unhex(?1), ?2, ?3, ?5, CAST(?4 AS TEXT))"
)
# The direct insert (the usual one: see SQLiteWriter._insert_direct), rows straight into the
# events, as SpooledRows bound and as StoreRows.
INSERT_SPOOLED = (
    "INSERT INTO main.events (id, key, ts, received_at, data) VALUES (unhex(?1), ?2, ?3, ?5, CAST(?4 AS TEXT))"
)
INSERT_ROWS = "INSERT INTO main.events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?)"
DROP_STAGED_ERASED = (
    "DELETE FROM temp.new_events WHERE EXISTS (SELECT 1 FROM main.erased_ids e WHERE e.id = new_events.id)"
)
# Staged rows whose id is stored already, or staged before them (the first of a batch is kept).
DROP_STAGED_REPEATS = (
    "DELETE FROM temp.new_events WHERE EXISTS (SELECT 1 FROM main.events e WHERE e.id = new_events.id)"
    " OR rowid NOT IN (SELECT min(rowid) FROM temp.new_events GROUP BY id)"
)
# A repeated id aborts this statement (its rows undone, the transaction kept): the writer then
# drops the repeats and runs it again. Repeats are rare (a retried batch), so the usual insert
# looks each id up once.
STORE_STAGED = (
    "INSERT INTO main.events (id, key, ts, received_at, data)"
    " SELECT id, key, ts, received_at, data FROM temp.new_events ORDER BY ts, id"
)
BUMP_COUNT = "UPDATE counters SET value = value + ? WHERE name = 'events'"
# The rollups of the new rows, aggregated in SQLite, so they always agree with the events
# table: one pass over the new rows (grouped by key and bucket: one sort) into a temporary
# table, from which both rollups are made (two passes and sorts over the new rows cost twice that).
NEW_ROWS_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS new_rows_rollup (key TEXT NOT NULL, bucket INTEGER NOT NULL,"
    " count INTEGER NOT NULL, first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL)"
)
AGGREGATE_NEW_ROWS = (
    "DELETE FROM temp.new_rows_rollup;"
    f" INSERT INTO temp.new_rows_rollup SELECT key, {BUCKET_SQL}, count(*), min(ts), max(ts) FROM temp.new_events"
    " GROUP BY 1, 2"
)
ROLL_UP_AGGREGATED = (
    "INSERT INTO rollup_15m (key, bucket, count) SELECT key, bucket, count FROM temp.new_rows_rollup WHERE true"
    " ON CONFLICT (bucket, key) DO UPDATE SET count = count + excluded.count"
)
KEY_STATS_AGGREGATED = (
    "INSERT INTO key_stats (key, count, first_ts, last_ts) SELECT key, sum(count), min(first_ts), max(last_ts)"
    " FROM temp.new_rows_rollup GROUP BY key ON CONFLICT (key) DO UPDATE SET count = count + excluded.count,"
    " first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)"
)
# The same two rollups, each straight from the events after `seq` ? (a store built by hand at a
# schema before 8, whose events had a seq: tests of old stores).
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
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "normal",
        unique_properties: Sequence[str] | None = None,
        declared_properties: Sequence[str] | None = None,
    ) -> None:
        self.path = str(path)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"opening store {self.path} failed: {exc}") from exc
        self._write_connection = open_migrated(self.path, synchronous)
        # Erasures are rare: while there are none, inserts skip looking their ids up (a trigger
        # cost 28% of inserts). The erased ids themselves stay in the store, never in memory:
        # they are kept for good (a replay of an erased event is never stored), so a set of
        # them would grow for ever and be read again at every start.
        with store_errors(f"reading the erased ids of {self.path}"):
            self._any_erased = self._write_connection.execute("SELECT EXISTS (SELECT 1 FROM erased_ids)").get == 1
            # HyperLogLog sketches of the --unique-property properties (backfilled here if new;
            # None keeps those the store has, for tools and migrations).
            self._sketches = SketchKeeper(self._write_connection, unique_properties)
            # CAST(data AS TEXT) reads the bytes in the file's encoding: UTF-8 unless made otherwise.
            self._utf8 = str(self._write_connection.pragma("encoding")).upper() == "UTF-8"
            # The staged batch (tens of MB at most) stays in memory, not in a temporary file
            # (set before any temporary table: changing it drops them).
            self._write_connection.pragma("temp_store", "MEMORY")
            self._write_connection.execute(NEW_ROWS_TABLE)
            self._write_connection.execute(STAGING_TABLE)
            # The typed values of the --property properties (a new one backfills on a thread).
            self._properties = PropertyKeeper(self._write_connection, self.path, declared_properties)

    @property
    def schema_version(self) -> int:
        return schema_version(self._write_connection)

    def insert(self, rows: Sequence[StoreRow]) -> int:
        with store_errors(f"insert of {len(rows)} events"):
            spooled = isinstance(rows, SpooledRows) and self._utf8
            if self._direct_possible():  # else the rows are bound once, for the staged insert
                if spooled:
                    inserted = self._insert_direct(INSERT_SPOOLED, cast(SpooledRows, rows).bound())
                else:
                    inserted = self._insert_direct(INSERT_ROWS, list(rows))
                if inserted is not None:
                    return inserted
            if spooled:
                try:
                    return self._insert(STAGE_SPOOLED, cast(SpooledRows, rows).bound())
                except apsw.ConstraintError:
                    pass  # an id SQLite does not read as hex (rolled back): converted in Python below
            return self._insert(STAGE, rows)

    def _insert_direct(self, insert: str, rows: list[Any]) -> int | None:
        """Insert every row straight into the events, in one transaction, with the counter and
        the rollups counted in Python; None (nothing written) when this cannot be: a row that is
        stored already, repeated in the batch, erased, or that SQLite refuses (an id that is not
        hex digits), or sketches or declared properties to keep — the staged insert
        (`_insert`) then sorts them out.

        The usual batch holds only new events: this path skips the staged insert's temporary
        table, its sort by (ts, id) and its grouping sort for the rollups (0.89x the writer's
        instructions per stored event at 100 events per request, bench/README.md).
        """
        connection = self._write_connection
        with self._properties.lock:
            if not self._direct_possible():
                return None
            sort_by_time(rows)
            buckets, key_stats = counted_rollups(rows)
            try:
                with connection:
                    connection.executemany(insert, rows)
                    connection.execute(BUMP_COUNT, (len(rows),))
                    connection.executemany(ROLL_UP_COUNTED, buckets)
                    connection.executemany(KEY_STATS_COUNTED, key_stats)
            except apsw.ConstraintError:  # rolled back, all of it
                return None
        return len(rows)

    def _direct_possible(self) -> bool:
        """Whether the direct insert can be exact: no erased ids to drop, no sketches or
        declared properties to keep from the transaction's new events."""
        return not (self._any_erased or self._sketches.paths or self._properties.numbers)

    def _insert(self, stage: str, rows: Sequence[Sequence[Any]]) -> int:
        """Insert in one transaction: stage the rows, keep the new ones (neither stored nor
        erased), then keep the counter, the rollups, the sketches and the declared properties
        in step with them."""
        connection = self._write_connection
        with self._properties.lock, connection:
            connection.execute(CLEAR_STAGED)
            connection.executemany(stage, rows)
            if self._any_erased:
                # One pass in SQLite over the staged rows, each id looked up in erased_ids.
                connection.execute(DROP_STAGED_ERASED)
            before = connection.total_changes()
            try:
                connection.execute(STORE_STAGED)
            except apsw.ConstraintError:  # an id stored or staged twice: this statement was undone
                connection.execute(DROP_STAGED_REPEATS)
                before = connection.total_changes()
                connection.execute(STORE_STAGED)
            inserted = int(connection.total_changes() - before)
            if inserted:
                connection.execute(BUMP_COUNT, (inserted,))
                connection.execute(AGGREGATE_NEW_ROWS)
                connection.execute(ROLL_UP_AGGREGATED)
                connection.execute(KEY_STATS_AGGREGATED)
                self._sketches.add_new_rows()
                self._properties.add_new_rows()
        return inserted

    def delete_matching(self, where: EventFilter, *, max_rows: int, remember_ids: bool) -> int:
        """Delete up to `max_rows` matching events in one transaction; return how many.

        With `remember_ids` (erasure), their ids are kept so they are never stored again.
        """
        matching = sql_where(where)
        connection = self._write_connection
        with self._properties.lock, store_errors(f"delete of up to {max_rows} events"), connection:
            ids: list[bytes] = [
                row[0]
                for row in connection.execute(
                    f"SELECT id FROM events{matching.sql} LIMIT ?", [*matching.params, max_rows]
                )
            ]
            if not ids:
                return 0
            spans = self._roll_down(ids)
            touched = self._sketches.touched(ids)
            self._properties.forget_events(ids)
            connection.executemany("DELETE FROM events WHERE id = ?", [(event_id,) for event_id in ids])
            if remember_ids:
                self._refresh_key_bounds(spans)
            self._sketches.rebuild(touched)  # a sketch cannot forget a value: rebuilt from what remains
            connection.execute(BUMP_COUNT, (-len(ids),))
            if remember_ids:
                connection.executemany(
                    "INSERT OR IGNORE INTO erased_ids (id) VALUES (?)", [(event_id,) for event_id in ids]
                )
        if remember_ids:
            self._any_erased = True
        return len(ids)

    def _roll_down(self, ids: Sequence[bytes]) -> dict[str, tuple[int, int]]:
        """Take events about to be deleted out of the rollups (inside the delete's transaction);
        return the first and last timestamp they had per key."""
        connection = self._write_connection
        spans: dict[str, tuple[int, int]] = {}
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            for key, bucket, count, first, last in connection.execute(
                f"SELECT key, {BUCKET_SQL}, count(*), min(ts), max(ts) FROM events WHERE id IN ({marks}) GROUP BY 1, 2",
                chunk,
            ).fetchall():
                connection.execute(
                    "UPDATE rollup_15m SET count = count - ? WHERE bucket = ? AND key = ?", (count, bucket, key)
                )
                connection.execute("UPDATE key_stats SET count = count - ? WHERE key = ?", (count, key))
                low, high = cast(int, first), cast(int, last)
                known = spans.get(cast(str, key))
                spans[cast(str, key)] = (low, high) if known is None else (min(known[0], low), max(known[1], high))
        connection.execute("DELETE FROM rollup_15m WHERE count <= 0")
        return spans

    def _refresh_key_bounds(self, spans: dict[str, tuple[int, int]]) -> None:
        """After an erasure, the first and last timestamps of each key it deleted from: those
        of the events that remain (/keys must not keep a time only erased events had; a
        retention keeps them: a key was first seen then, whatever is left), read
        only when a deleted event held one, from the first or last 15-minute bucket the
        rollup still counts."""
        connection = self._write_connection
        for key, (deleted_first, deleted_last) in spans.items():
            row = connection.execute("SELECT count, first_ts, last_ts FROM key_stats WHERE key = ?", (key,)).fetchone()
            if row is None:
                continue
            count, first, last = row
            if count <= 0:
                connection.execute("DELETE FROM key_stats WHERE key = ?", (key,))
                continue
            if deleted_first <= first:
                first = self._remaining_bound(key, "min")
            if deleted_last >= last:
                last = self._remaining_bound(key, "max")
            connection.execute("UPDATE key_stats SET first_ts = ?, last_ts = ? WHERE key = ?", (first, last, key))

    def _remaining_bound(self, key: str, which: str) -> int:
        """min or max(ts) of the stored events of `key` (at least one remains)."""
        connection = self._write_connection
        bucket = connection.execute(f"SELECT {which}(bucket) FROM rollup_15m WHERE key = ?", (key,)).get
        return cast(
            int,
            connection.execute(
                f"SELECT {which}(ts) FROM events WHERE key = ? AND ts >= ? AND ts < ?",
                (key, cast(int, bucket) * BUCKET_US, (cast(int, bucket) + 1) * BUCKET_US),
            ).get,
        )

    def wait_backfilled(self, timeout_s: float) -> bool:
        """Whether the declared properties' backfill finished within `timeout_s` (tools, tests)."""
        return self._properties.wait_backfilled(timeout_s)

    def close(self) -> None:
        self._properties.close()
        try:
            self._write_connection.close()
        except apsw.Error:
            pass  # closing is best effort: the file stays consistent either way (WAL)
