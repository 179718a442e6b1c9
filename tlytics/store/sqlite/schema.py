"""The SQLite store's schema: its versioned migrations (`PRAGMA user_version`) and the one
function that brings a file up to date, run when the write side opens.

Migrations only ever append: a store written by any earlier version opens with every one it
has not run yet, each in the same transaction as its version bump; a store newer than this
code is refused rather than misread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import apsw

from tlytics.errors import StoreError
from tlytics.jsontext import canonical
from tlytics.store.sqlite.connection import Synchronous, connect, store_errors
from tlytics.store.sqlite.preaggregates import ALL_KEYS_MIGRATION, count_stored_values
from tlytics.timefmt import MAX_US, MIN_US

BUCKET_US = 900_000_000  # 15 minutes: the rollups' bucket
# An event's rollup bucket: floor division for negative timestamps too (SQLite's / truncates
# toward zero).
BUCKET_SQL = "(ts / 900000000 - (ts < 0 AND ts % 900000000 != 0))"
# A (ts, id) position before every event: where a walk over the events in their order starts.
BEFORE_EVERY_TS = -(2**63)
BEFORE_EVERY_POSITION = (BEFORE_EVERY_TS, b"")


def _add_property_counts(connection: apsw.Connection) -> None:
    """Migration 9: hourly counts per key and value of the declared properties of few values
    (see tlytics.store.sqlite.preaggregates), filled from the values already stored."""
    connection.execute(
        """
        CREATE TABLE property_counts (property INTEGER NOT NULL, hour INTEGER NOT NULL, key TEXT NOT NULL,
            kind INTEGER NOT NULL, value NOT NULL, count INTEGER NOT NULL,
            PRIMARY KEY (property, hour, key, kind, value)) WITHOUT ROWID;
        CREATE INDEX property_counts_by_value ON property_counts (property, kind, value, hour);
        CREATE TABLE property_count_values (property INTEGER NOT NULL, kind INTEGER NOT NULL, value NOT NULL,
            PRIMARY KEY (property, kind, value)) WITHOUT ROWID;
        ALTER TABLE declared_properties ADD COLUMN counted INTEGER NOT NULL DEFAULT 1;
        """
    )
    count_stored_values(connection)


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


MIGRATIONS: list[str | Callable[[apsw.Connection], None]] = [
    # 1: events, keyed by an internal rowid, unique on the client's id, and indexed for
    # "newest first" paging (migration 8 clusters them by time instead).
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
    # 6: HyperLogLog sketches of the properties declared with --unique-property (see
    # tlytics.store.sqlite.sketches), per 15-minute bucket and key, and per bucket for all keys
    # (a read without a key filter merges one sketch per bucket, not one per key). A property
    # is listed in sketched_properties only once its sketches cover every event.
    """
    CREATE TABLE sketched_properties (path TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE sketch_15m (path TEXT NOT NULL, bucket INTEGER NOT NULL, key TEXT NOT NULL,
                             registers BLOB NOT NULL, PRIMARY KEY (path, bucket, key));
    CREATE TABLE sketch_15m_all_keys (path TEXT NOT NULL, bucket INTEGER NOT NULL, registers BLOB NOT NULL,
                                      PRIMARY KEY (path, bucket));
    """,
    # 7: declared properties (--property; see tlytics.store.sqlite.properties): each event's
    # value of each declared property, typed as the filters read it, keyed by the event's
    # (ts, id) and indexed by value. A property's rows answer reads only once `complete`.
    """
    CREATE TABLE declared_properties (number INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
        backfill_from INTEGER NOT NULL, backfill_to INTEGER NOT NULL, complete INTEGER NOT NULL);
    CREATE TABLE property_values (property INTEGER NOT NULL, ts INTEGER NOT NULL, id BLOB NOT NULL,
        kind INTEGER NOT NULL, value, PRIMARY KEY (property, ts, id)) WITHOUT ROWID;
    CREATE INDEX property_values_by_value ON property_values (property, kind, value, ts);
    """,
    # 8: events in one clustered b-tree on (ts, id), the order of every read and cursor, plus
    # one unique index on id (idempotent inserts, /lookup, erasure): a rowid table with an id
    # index and a (ts, id) index stored the id three times and the time twice. Rows stay small
    # enough for WITHOUT ROWID (~130 bytes of a 4 KiB page). The writer finds a transaction's
    # new events in a staging table, not by seq, so a declared property's backfill walks the
    # events by (ts, id) position: one not finished restarts from the first event (rows
    # already stored are kept once).
    f"""
    CREATE TABLE events_clustered (id BLOB NOT NULL, key TEXT NOT NULL, ts INTEGER NOT NULL,
        received_at INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (ts, id)) WITHOUT ROWID;
    INSERT INTO events_clustered (id, key, ts, received_at, data)
        SELECT id, key, ts, received_at, data FROM events ORDER BY ts, id;
    DROP TABLE events;
    ALTER TABLE events_clustered RENAME TO events;
    CREATE UNIQUE INDEX events_by_id ON events (id);
    CREATE TABLE declared_properties_by_position (number INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
        backfilled_ts INTEGER NOT NULL, backfilled_id BLOB NOT NULL, complete INTEGER NOT NULL);
    INSERT INTO declared_properties_by_position (number, path, backfilled_ts, backfilled_id, complete)
        SELECT number, path, {BEFORE_EVERY_TS}, x'', complete FROM declared_properties;
    DROP TABLE declared_properties;
    ALTER TABLE declared_properties_by_position RENAME TO declared_properties;
    """,
    # 9: hourly counts per key and value of the declared properties of few values (a breakdown
    # or a filtered chart sums them instead of reading one value per event), `counted` while kept.
    _add_property_counts,
    # 10: the same counts summed over the keys (property_counts_all_keys), for the questions
    # that name no key, filled from property_counts.
    ALL_KEYS_MIGRATION,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(connection: apsw.Connection, path: str) -> None:
    """Run the migrations `connection`'s store has not had yet; StoreError for a newer store."""
    with connection:
        version = int(connection.pragma("user_version"))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, newer than this Tlytics ({SCHEMA_VERSION}); upgrade Tlytics"
            )
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            if isinstance(migration, str):
                connection.execute(migration)
            else:
                migration(connection)
            connection.pragma("user_version", number)


def open_migrated(path: str, synchronous: Synchronous) -> apsw.Connection:
    """A write connection to the store at `path`, its schema brought up to date.

    With a current schema no write lock is needed, so this opens even while another process
    holds it; a migration waits for it (the busy timeout), then fails with StoreError.
    """
    with store_errors(f"opening store {path}"):
        connection = connect(path, synchronous)
        try:
            migrate(connection, path)
        except BaseException:
            connection.close()
            raise
    return connection


def schema_version(connection: apsw.Connection) -> int:
    return int(connection.pragma("user_version"))
