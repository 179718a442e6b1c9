"""The embedded SQLite store on APSW: WAL, explicit `synchronous`, versioned migrations.

Writes go through one connection owned by the caller's single writer thread; reads use their
own connection so a long read never waits for a write. The event count lives in a counter row
updated in the same transaction as the inserts, because `count(*)` on millions of rows is a
full index scan on every `/view`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import apsw
import apsw.bestpractice

from tlytics.errors import StoreError
from tlytics.store.base import EventFilter, Page, Position, StoredEvent, StoreRow

Synchronous = Literal["normal", "full"]

_MIGRATIONS: list[str] = [
    # 1: events, keyed by an internal rowid (rows carry JSON, too big for WITHOUT ROWID),
    # unique on the client's id, and indexed for "newest first" paging.
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id BLOB NOT NULL UNIQUE,
        key TEXT NOT NULL,
        ts INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events (ts, id);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters (name, value) VALUES ('events', 0);
    """,
    # 2: ids of erased events, so a retry or a replay of an erased event cannot bring it back.
    """
    CREATE TABLE erased_ids (id BLOB PRIMARY KEY) WITHOUT ROWID;
    """,
    # 3: rollups kept by the writer in each insert transaction, so /stats and /keys do not
    # scan millions of events: counts per key and 15-minute bucket (every UTC offset in use is
    # a multiple of 15 minutes, so local hours and days are unions of buckets), and per key.
    """
    CREATE TABLE rollup_15m (key TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL,
                             PRIMARY KEY (bucket, key)) WITHOUT ROWID;
    CREATE TABLE key_stats (key TEXT PRIMARY KEY, count INTEGER NOT NULL,
                            first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO rollup_15m (key, bucket, count)
        SELECT key, ts / 900000000 - (ts < 0 AND ts % 900000000 != 0), count(*) FROM events GROUP BY 1, 2;
    INSERT INTO key_stats (key, count, first_ts, last_ts)
        SELECT key, count(*), min(ts), max(ts) FROM events GROUP BY key;
    """,
]
BUCKET_US = 900_000_000  # 15 minutes
# Floor division for negative timestamps too (SQLite's / truncates toward zero).
_BUCKET_SQL = "(ts / 900000000 - (ts < 0 AND ts % 900000000 != 0))"
_ROLL_UP_NEW_ROWS = (
    f"INSERT INTO rollup_15m (key, bucket, count) SELECT key, {_BUCKET_SQL}, count(*) FROM events"
    " WHERE seq > ? GROUP BY 1, 2 ON CONFLICT (bucket, key) DO UPDATE SET count = count + excluded.count"
)
_KEY_STATS_NEW_ROWS = (
    "INSERT INTO key_stats (key, count, first_ts, last_ts) SELECT key, count(*), min(ts), max(ts) FROM events"
    " WHERE seq > ? GROUP BY key ON CONFLICT (key) DO UPDATE SET count = count + excluded.count,"
    " first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)"
)
SCHEMA_VERSION = len(_MIGRATIONS)

_INSERT = (
    "INSERT INTO events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO NOTHING"
)
_BUMP_COUNT = "UPDATE counters SET value = value + ? WHERE name = 'events'"
_COUNT = "SELECT value FROM counters WHERE name = 'events'"

_CONNECTION_PRACTICES: tuple[Callable[[apsw.Connection], None], ...] = (
    apsw.bestpractice.connection_wal,
    apsw.bestpractice.connection_enable_foreign_keys,
    apsw.bestpractice.connection_dqs,
    apsw.bestpractice.connection_recursive_triggers,
)


BUSY_TIMEOUT_MS = 10_000


def _connect(path: str, synchronous: Synchronous, *, readonly: bool = False) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    connection = apsw.Connection(path, flags=flags)
    # First: wait out another connection's short write locks instead of failing at once (the
    # practices below already take locks; after a SIGKILL the old writer process may still be
    # finishing its last batch).
    connection.set_busy_timeout(BUSY_TIMEOUT_MS)
    for practice in _CONNECTION_PRACTICES:
        practice(connection)
    connection.pragma("synchronous", synchronous.upper())
    if not readonly:
        _optimize_unless_busy(connection)
    return connection


def _optimize_unless_busy(connection: apsw.Connection) -> None:
    """apsw.bestpractice.connection_optimize, skipped while another process holds the write lock.

    It may write planner statistics, so it needs that lock; it is only an optimization (the next
    open runs it again), and waiting for it would keep a store whose schema is current from
    opening at all while, say, a backup holds the lock: the server could not even spool.
    """
    connection.set_busy_timeout(100)
    try:
        apsw.bestpractice.connection_optimize(connection)
    except apsw.BusyError:
        pass
    finally:
        connection.set_busy_timeout(BUSY_TIMEOUT_MS)


def _conditions(where: EventFilter) -> tuple[list[str], list[Any]]:
    """SQL conditions (ANDed) and their parameters for a filter."""
    conditions: list[str] = []
    params: list[Any] = []
    if where.keys:
        conditions.append(f"key IN ({','.join('?' * len(where.keys))})")
        params += where.keys
    if where.since_us is not None:
        conditions.append("ts >= ?")
        params.append(where.since_us)
    if where.until_us is not None:
        conditions.append("ts < ?")
        params.append(where.until_us)
    for path, value in where.where:
        json_path = "$." + path
        number = _as_number(value)
        if number is None:
            conditions.append("json_extract(data, ?) = ?")
            params += [json_path, value]
        else:
            # 123 matches {"user_id": 123} and {"user_id": "123"}.
            conditions.append("(json_extract(data, ?) = ? OR json_extract(data, ?) = ?)")
            params += [json_path, value, json_path, number]
    return conditions, params


def _as_number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _stored_event(row: tuple[Any, ...]) -> StoredEvent:
    event_id, key, timestamp_us, received_at_us, data_json = row
    return StoredEvent(
        id=str(uuid.UUID(bytes=event_id)),
        key=key,
        timestamp_us=timestamp_us,
        received_at_us=received_at_us,
        data_json=data_json,
    )


class SQLiteStore:
    """Store on one SQLite file. `insert` must be called from one thread at a time."""

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "normal") -> None:
        self.path = str(path)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = _connect(self.path, synchronous)
            self._migrate()
            self._reader = _connect(self.path, synchronous, readonly=True)
        except (apsw.Error, OSError) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        self._reader_lock = threading.Lock()
        # Erasures are rare: the writer keeps their ids in memory and filters inserts in
        # Python, which costs nothing while there are none (a trigger cost 28% of inserts).
        self._erased: set[bytes] = {
            row[0] for row in self._writer.execute("SELECT id FROM erased_ids")
        }

    def _migrate(self) -> None:
        with self._writer:
            version = int(self._writer.pragma("user_version"))
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Tlytics"
                    f" ({SCHEMA_VERSION}); upgrade Tlytics"
                )
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                self._writer.execute(script)
                self._writer.pragma("user_version", number)

    @property
    def schema_version(self) -> int:
        return int(self._writer.pragma("user_version"))

    def insert(self, rows: Sequence[StoreRow]) -> int:
        if self._erased:
            rows = [row for row in rows if row[0] not in self._erased]
        try:
            with self._writer:
                last_seq = self._writer.execute("SELECT max(seq) FROM events").get or 0
                before = self._writer.total_changes()
                self._writer.executemany(_INSERT, rows)
                inserted = int(self._writer.total_changes() - before)
                if inserted:
                    self._writer.execute(_BUMP_COUNT, (inserted,))
                    # Only the rows this transaction added (duplicates were not), aggregated
                    # in SQLite: the rollups always agree with the events table.
                    self._writer.execute(_ROLL_UP_NEW_ROWS, (last_seq,))
                    self._writer.execute(_KEY_STATS_NEW_ROWS, (last_seq,))
            return inserted
        except apsw.Error as exc:
            raise StoreError(f"insert of {len(rows)} events failed: {exc}") from exc

    def count(self) -> int:
        try:
            with self._reader_lock:
                return int(self._reader.execute(_COUNT).get)
        except apsw.Error as exc:
            raise StoreError(f"count failed: {exc}") from exc

    def page(
        self,
        page: int,
        page_size: int,
        *,
        where: EventFilter = EventFilter(),
        after: Position | None = None,
        ascending: bool = False,
    ) -> Page:
        conditions, params = _conditions(where)
        if after is not None:
            # Keyset pagination: a seek on the (ts, id) index, as fast at any depth.
            conditions.append(f"(ts, id) {'>' if ascending else '<'} (?, ?)")
            params += [after.timestamp_us, after.id]
        sql_where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        direction = "ASC" if ascending else "DESC"
        offset = 0 if after is not None else (page - 1) * page_size
        query = (
            f"SELECT id, key, ts, received_at, data FROM events{sql_where}"
            f" ORDER BY ts {direction}, id {direction} LIMIT ? OFFSET ?"
        )
        try:
            # One read transaction, so the total and the rows come from the same snapshot.
            with self._reader_lock, self._reader:
                if where.is_empty:
                    total = int(self._reader.execute(_COUNT).get)
                else:
                    filter_where, filter_params = _conditions(where)
                    count_query = "SELECT count(*) FROM events WHERE " + " AND ".join(filter_where)
                    total = int(self._reader.execute(count_query, filter_params).get)
                # One row more than asked tells whether a next page exists.
                rows = self._reader.execute(query, [*params, page_size + 1, offset]).fetchall()
        except apsw.Error as exc:
            raise StoreError(f"page read failed: {exc}") from exc
        next_position = None
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            next_position = Position(timestamp_us=cast(int, last[2]), id=cast(bytes, last[0]))
        return Page(total=total, events=[_stored_event(row) for row in rows], next_position=next_position)

    def delete_matching(self, where: EventFilter, *, max_rows: int, remember_ids: bool) -> int:
        """Delete up to `max_rows` matching events in one transaction; return how many.

        With `remember_ids` (erasure), their ids are kept so they are never stored again.
        """
        conditions, params = _conditions(where)
        sql_where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        try:
            with self._writer:
                ids = [
                    row[0]
                    for row in self._writer.execute(f"SELECT id FROM events{sql_where} LIMIT ?", [*params, max_rows])
                ]
                if not ids:
                    return 0
                self._roll_down(ids)
                self._writer.executemany("DELETE FROM events WHERE id = ?", [(event_id,) for event_id in ids])
                self._writer.execute(_BUMP_COUNT, (-len(ids),))
                if remember_ids:
                    self._writer.executemany(
                        "INSERT OR IGNORE INTO erased_ids (id) VALUES (?)", [(event_id,) for event_id in ids]
                    )
        except apsw.Error as exc:
            raise StoreError(f"delete failed: {exc}") from exc
        if remember_ids:
            self._erased.update(ids)
        return len(ids)

    def keys_summary(self) -> list[tuple[str, int, int, int]]:
        """(key, count, first timestamp µs, last timestamp µs) for every key, most events first."""
        try:
            with self._reader_lock:
                rows = self._reader.execute(
                    "SELECT key, count, first_ts, last_ts FROM key_stats WHERE count > 0 ORDER BY count DESC, key"
                ).fetchall()
        except apsw.Error as exc:
            raise StoreError(f"keys read failed: {exc}") from exc
        return [(str(k), cast(int, c), cast(int, first), cast(int, last)) for k, c, first, last in rows]

    def bucket_counts(
        self, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
    ) -> list[tuple[int, int | None]]:
        """(count, distinct values of `unique_path` or None) for each bucket [start, next start)."""
        bounds = list(zip(starts_us, [*starts_us[1:], end_us]))
        if not where.where and unique_path is None:
            return self._rollup_counts(bounds, where)
        conditions, params = _conditions(where)
        extra = "".join(f" AND {c}" for c in conditions)
        unique_sql = ", count(DISTINCT json_extract(data, ?))" if unique_path else ""
        query = f"SELECT count(*){unique_sql} FROM events WHERE ts >= ? AND ts < ?{extra}"
        results: list[tuple[int, int | None]] = []
        try:
            with self._reader_lock, self._reader:
                for start, end in bounds:
                    head = ["$." + unique_path] if unique_path else []
                    row = self._reader.execute(query, [*head, start, end, *params]).fetchone()
                    assert row is not None
                    results.append((cast(int, row[0]), cast(int, row[1]) if unique_path else None))
        except apsw.Error as exc:
            raise StoreError(f"stats read failed: {exc}") from exc
        return results

    def _rollup_counts(self, bounds: list[tuple[int, int]], where: EventFilter) -> list[tuple[int, int | None]]:
        """Bucket counts from rollup_15m for a filter of keys and times only: the whole
        15-minute buckets inside each range come from the rollup, the ragged edges (less than
        15 minutes each) are counted from the events."""
        keys = list(where.keys)
        key_condition = f" AND key IN ({','.join('?' * len(keys))})" if keys else ""
        rollup_query = f"SELECT coalesce(sum(count), 0) FROM rollup_15m WHERE bucket >= ? AND bucket < ?{key_condition}"
        raw_query = f"SELECT count(*) FROM events WHERE ts >= ? AND ts < ?{key_condition}"

        def count(query: str, low: int, high: int) -> int:
            row = self._reader.execute(query, [low, high, *keys]).fetchone()
            assert row is not None
            return cast(int, row[0])

        results: list[tuple[int, int | None]] = []
        try:
            with self._reader_lock, self._reader:
                for start, end in bounds:
                    low = start if where.since_us is None else max(start, where.since_us)
                    high = end if where.until_us is None else min(end, where.until_us)
                    if low >= high:
                        results.append((0, None))
                        continue
                    first_whole = -(-low // BUCKET_US)  # ceil
                    last_whole = high // BUCKET_US
                    if first_whole >= last_whole:
                        total = count(raw_query, low, high)
                    else:
                        total = count(rollup_query, first_whole, last_whole)
                        if low < first_whole * BUCKET_US:
                            total += count(raw_query, low, first_whole * BUCKET_US)
                        if last_whole * BUCKET_US < high:
                            total += count(raw_query, last_whole * BUCKET_US, high)
                    results.append((total, None))
        except apsw.Error as exc:
            raise StoreError(f"stats read failed: {exc}") from exc
        return results

    def breakdown(self, where: EventFilter, path: str, limit: int) -> tuple[list[tuple[Any, int]], int]:
        """The `limit` most frequent values of data.`path` among matching events, and their total."""
        conditions, params = _conditions(where)
        sql_where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        try:
            with self._reader_lock, self._reader:
                top = self._reader.execute(
                    f"SELECT json_extract(data, ?) AS value, count(*) AS n FROM events{sql_where}"
                    " GROUP BY value ORDER BY n DESC, value LIMIT ?",
                    ["$." + path, *params, limit],
                ).fetchall()
                total = self._reader.execute(f"SELECT count(*) FROM events{sql_where}", params).fetchone()
        except apsw.Error as exc:
            raise StoreError(f"breakdown read failed: {exc}") from exc
        assert total is not None
        return [(value, cast(int, n)) for value, n in top], cast(int, total[0])

    def _roll_down(self, ids: Sequence[bytes]) -> None:
        """Take events about to be deleted out of the rollups (inside the delete's transaction).

        key_stats keeps first_ts/last_ts: they say when a key was first and last seen, which
        stays true after its events are deleted.
        """
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, bucket, count in self._writer.execute(
                f"SELECT key, {_BUCKET_SQL}, count(*) FROM events WHERE id IN ({marks}) GROUP BY 1, 2", chunk
            ).fetchall():
                self._writer.execute(
                    "UPDATE rollup_15m SET count = count - ? WHERE bucket = ? AND key = ?", (count, bucket, key)
                )
                self._writer.execute("UPDATE key_stats SET count = count - ? WHERE key = ?", (count, key))
        self._writer.execute("DELETE FROM rollup_15m WHERE count <= 0")

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        try:
            with self._reader_lock:
                # Chunks stay under SQLite's limit on bound parameters.
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    query = f"SELECT id FROM events WHERE id IN ({marks})"
                    found.update(row[0] for row in self._reader.execute(query, chunk))
        except apsw.Error as exc:
            raise StoreError(f"id lookup failed: {exc}") from exc
        return found

    def close(self) -> None:
        for connection in (self._reader, self._writer):
            try:
                connection.close()
            except apsw.Error:
                pass
