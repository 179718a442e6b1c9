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
import orjson

from tlytics.errors import StoreError
from tlytics.jsontext import canonical
from tlytics.store.base import Breakdown, EventFilter, Page, PropertyMatch, Position, StoredEvent, StoreRow
from tlytics.timefmt import MAX_US, MIN_US

Synchronous = Literal["normal", "full"]
BUCKET_US = 900_000_000  # 15 minutes: the rollups' bucket

def _canonicalize_stored_data(connection: apsw.Connection) -> None:
    """Migration 5: store `data` in its canonical text (no whitespace between tokens), as
    every version from this one does; earlier ones kept it as sent, so a pretty-printed
    body was exported across several NDJSON lines. Tokens themselves are not touched."""
    query = (
        "SELECT seq, data FROM events WHERE seq > ? AND (instr(data, ' ') OR instr(data, char(10))"
        " OR instr(data, char(13)) OR instr(data, char(9))) ORDER BY seq LIMIT 1000"
    )
    last_seq = -1
    while True:
        rows = connection.execute(query, (last_seq,)).fetchall()
        if not rows:
            return
        updates = []
        for seq, data in rows:
            try:
                compact = canonical(cast(str, data).encode()).decode()
            except (ValueError, RecursionError):
                continue  # not JSON this version can read: left as it is
            if compact != data:
                updates.append((compact, seq))
        connection.executemany("UPDATE events SET data = ? WHERE seq = ?", updates)
        last_seq = cast(int, rows[-1][0])


_MIGRATIONS: list[str | Callable[[apsw.Connection], None]] = [
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
    # 4: events whose timestamp lies outside the years 0001-9999 (UTC), which earlier versions
    # accepted and no reader can format, move out of the way (kept for a person to look at),
    # and the rollups and the counter forget them, so every read answers again.
    f"""
    CREATE TABLE unreadable_events (seq INTEGER PRIMARY KEY, id BLOB NOT NULL, key TEXT NOT NULL,
        ts INTEGER NOT NULL, received_at INTEGER NOT NULL, data TEXT NOT NULL, reason TEXT NOT NULL);
    INSERT INTO unreadable_events (seq, id, key, ts, received_at, data, reason)
        SELECT seq, id, key, ts, received_at, data, 'timestamp outside the years 0001-9999' FROM events
        WHERE ts < {MIN_US} OR ts > {MAX_US};
    DELETE FROM events WHERE ts < {MIN_US} OR ts > {MAX_US};
    UPDATE counters SET value = value - (SELECT count(*) FROM unreadable_events) WHERE name = 'events';
    UPDATE key_stats SET count = count - (SELECT count(*) FROM unreadable_events u WHERE u.key = key_stats.key)
        WHERE key IN (SELECT key FROM unreadable_events);
    UPDATE key_stats SET
        first_ts = coalesce((SELECT min(ts) FROM events e WHERE e.key = key_stats.key), max(first_ts, {MIN_US})),
        last_ts = coalesce((SELECT max(ts) FROM events e WHERE e.key = key_stats.key), min(last_ts, {MAX_US}))
        WHERE first_ts < {MIN_US} OR last_ts > {MAX_US} OR first_ts > {MAX_US} OR last_ts < {MIN_US};
    DELETE FROM rollup_15m WHERE bucket < {MIN_US // BUCKET_US} OR bucket > {MAX_US // BUCKET_US};
    """,
    # 5: data in its canonical text.
    _canonicalize_stored_data,
]
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
_INT64_MAX = 2**63 - 1

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
    for path, match in where.where:
        condition, values = _property_condition("$." + path, match)
        conditions.append(condition)
        params += values
    return conditions, params


def _property_condition(json_path: str, match: PropertyMatch) -> tuple[str, list[Any]]:
    """SQL for one typed property match. json_extract alone cannot tell `true` from `1` nor
    `null` from a missing property; json_type can."""
    if match.kind in ("true", "false", "null"):
        return "json_type(data, ?) = ?", [json_path, match.kind]
    if match.kind == "number" and match.number is not None:
        # Without affinity, SQLite never finds a text equal to a number: `IN (number, text)`
        # matches a JSON number by value and a JSON string by its exact text.
        return (
            "(json_type(data, ?) IN ('integer', 'real', 'text') AND json_extract(data, ?) IN (?, ?))",
            [json_path, json_path, match.number, match.text],
        )
    return "(json_type(data, ?) = 'text' AND json_extract(data, ?) = ?)", [json_path, json_path, match.text]


# The JSON type of a property, with integers and reals as one kind (1 and 1.0 are one value);
# NULL when the property is missing.
_VALUE_KIND_SQL = "CASE json_type(data, ?1) WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' ELSE json_type(data, ?1) END"
_JSON_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _json_value(kind: str, value: Any) -> Any:
    """A property's value, from its kind and json_extract's SQL value, as a JSON value."""
    if kind in _JSON_LITERALS:
        return _JSON_LITERALS[kind]
    if kind in ("object", "array"):
        return orjson.loads(value)  # json_extract gives containers as JSON text
    return value


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
            for number, migration in enumerate(_MIGRATIONS[version:], start=version + 1):
                if isinstance(migration, str):
                    self._writer.execute(migration)
                else:
                    migration(self._writer)
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
        # A page beyond any store is simply past the end (SQLite's OFFSET is a 64-bit integer).
        offset = 0 if after is not None else min((page - 1) * page_size, _INT64_MAX)
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

    def breakdown(self, where: EventFilter, path: str, limit: int) -> Breakdown:
        """The `limit` most frequent values of data.`path` among matching events, the number of
        matching events, and how many lack the property. Values are grouped by JSON type and
        value, so `true` and `1`, or `"1"` and `1`, are told apart."""
        conditions, params = _conditions(where)
        sql_where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        present = " AND ".join([*conditions, "json_type(data, ?1) IS NOT NULL"])
        try:
            with self._reader_lock, self._reader:
                # ?1 is the property's path; the filter's parameters follow it.
                top = self._reader.execute(
                    f"SELECT {_VALUE_KIND_SQL} AS kind, json_extract(data, ?1) AS value, count(*) AS n"
                    f" FROM events WHERE {present} GROUP BY kind, value ORDER BY n DESC, kind, value LIMIT ?",
                    ["$." + path, *params, limit],
                ).fetchall()
                total, missing = self._reader.execute(
                    f"SELECT count(*), coalesce(sum(json_type(data, ?1) IS NULL), 0) FROM events{sql_where}",
                    ["$." + path, *params],
                ).fetchone() or (0, 0)
        except apsw.Error as exc:
            raise StoreError(f"breakdown read failed: {exc}") from exc
        return Breakdown(
            top=[(_json_value(str(kind), value), cast(int, n)) for kind, value, n in top],
            total=cast(int, total),
            missing=cast(int, missing),
        )

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
