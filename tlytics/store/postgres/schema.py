"""The PostgreSQL store's schema: its versioned migrations (table `tlytics_schema`) and the
one function that brings a database up to date, safe when several nodes start at once.

Every node runs `migrate_postgres` at start: the first to take the advisory lock migrates, the
others wait for it and then find the schema current. Migrations only ever append, each in the
same transaction as its version bump; a database newer than this code is refused.

Version 1 is the bare event store (`events`, `erased_ids`): what a bulk load fills, e.g. events
copied in with psql. Version 2 derives everything else from the events (the per-node counters
and rollups, `key_stats`), brings `data` to its canonical text, and adds the recorded
`erasures` and the SQL functions the reads use; so a database holding only events opens like
one Tlytics wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import psycopg

from tlytics.errors import StoreError
from tlytics.jsontext import canonical
from tlytics.store.postgres.connection import connect, describe, store_errors
from tlytics.store.postgres.declared import MIGRATION as DECLARED_PROPERTIES
from tlytics.store.postgres.partitions import partition_events
from tlytics.store.postgres.preaggregates import ALL_KEYS_MIGRATION, count_stored_values
from tlytics.store.postgres.preaggregates import MIGRATION as PROPERTY_COUNTS
from tlytics.store.postgres.schema_functions import FILTER_FUNCTIONS, FUNCTIONS, NUL_FUNCTIONS
from tlytics.timefmt import MAX_US, MIN_US

Connection = psycopg.Connection[tuple[object, ...]]

BUCKET_US = 900_000_000  # 15 minutes: the rollups' bucket
# An event's rollup bucket: floor division for negative timestamps too (PostgreSQL's integer
# division truncates toward zero). No `%`: it goes into queries with parameters.
BUCKET_SQL = "(ts / 900000000 - (ts < 0 AND mod(ts, 900000000) <> 0)::int)"

# pg_advisory_lock keys ("tlyt" and a number): migrations (session lock), and erasures
# (exclusive transaction lock) against inserts (shared transaction lock).
MIGRATION_LOCK = 0x746C_7974_0000_0001
ERASURE_LOCK = 0x746C_7974_0000_0002


def _canonicalize_stored_data(connection: Connection) -> None:
    """Part of migration 2: `data` in its canonical text (no whitespace between tokens), as
    Tlytics writes it; a bulk load may have kept it as sent. Tokens themselves are not touched."""
    last_id = None
    while True:
        rows = connection.execute(
            "SELECT id, data FROM events WHERE data ~ '[ \t\n\r]' AND (%s::uuid IS NULL OR id > %s::uuid)"
            " ORDER BY id LIMIT 1000",
            (last_id, last_id),
        ).fetchall()
        if not rows:
            return
        updates = []
        for event_id, data in rows:
            try:
                compact = canonical(cast(str, data).encode()).decode()
            except (ValueError, RecursionError):
                continue  # not JSON this version can read: left as it is
            if compact != data:
                updates.append((compact, event_id))
        with connection.cursor() as cursor:
            cursor.executemany("UPDATE events SET data = %s WHERE id = %s", updates)
        last_id = rows[-1][0]


def _derive_from_events(connection: Connection) -> None:
    """Migration 2: canonical data, then counters, rollups and recorded erasures."""
    _canonicalize_stored_data(connection)
    connection.execute(
        f"""
        CREATE TABLE counters (node text COLLATE "C" PRIMARY KEY, count bigint NOT NULL);
        CREATE TABLE rollup_15m (bucket bigint NOT NULL, key text COLLATE "C" NOT NULL,
                                 node text COLLATE "C" NOT NULL, count bigint NOT NULL,
                                 PRIMARY KEY (bucket, key, node));
        CREATE TABLE key_stats (key text COLLATE "C" NOT NULL, node text COLLATE "C" NOT NULL,
                                count bigint NOT NULL, first_ts bigint NOT NULL, last_ts bigint NOT NULL,
                                PRIMARY KEY (key, node));
        CREATE TABLE erasures (filter text PRIMARY KEY, made_at bigint NOT NULL);
        DELETE FROM events WHERE ts < {MIN_US} OR ts > {MAX_US};
        INSERT INTO counters (node, count) SELECT '', count(*) FROM events HAVING count(*) > 0;
        INSERT INTO rollup_15m (bucket, key, node, count) SELECT {BUCKET_SQL}, key, '', count(*) FROM events GROUP BY 1, 2;
        INSERT INTO key_stats (key, node, count, first_ts, last_ts)
            SELECT key, '', count(*), min(ts), max(ts) FROM events GROUP BY key;
        {FUNCTIONS}
        """
    )


def _add_property_counts(connection: Connection) -> None:
    """Migration 8: the counts' tables, filled from the stored values."""
    connection.execute(PROPERTY_COUNTS)
    with connection.cursor() as cursor:
        count_stored_values(cursor)


MIGRATIONS: list[str | Callable[[Connection], None]] = [
    # 1: the events, unique on the client's id and indexed for "newest first" paging (keys
    # compare as bytes, as in SQLite), and the ids of erased events.
    """
    CREATE TABLE events (
        id uuid PRIMARY KEY,
        key text COLLATE "C" NOT NULL,
        ts bigint NOT NULL,
        received_at bigint NOT NULL,
        data text NOT NULL
    );
    CREATE INDEX events_by_time ON events (ts, id);
    CREATE TABLE erased_ids (id uuid PRIMARY KEY);
    """,
    # 2: what derives from the events (see the module's docstring).
    _derive_from_events,
    # 3: the functions of the ordering and contains filters.
    FILTER_FUNCTIONS,
    # 4: HyperLogLog sketches of the properties declared with --unique-property (see
    # tlytics.store.postgres.sketches), per 15-minute bucket and key, and per bucket for all
    # keys, each node's in rows of its own.
    """
    CREATE TABLE sketched_properties (path text PRIMARY KEY);
    CREATE TABLE sketch_15m (path text NOT NULL, bucket bigint NOT NULL, key text COLLATE "C" NOT NULL,
                             node text NOT NULL, registers bytea NOT NULL, PRIMARY KEY (path, bucket, key, node));
    CREATE TABLE sketch_15m_all_keys (path text NOT NULL, bucket bigint NOT NULL, node text NOT NULL,
                                      registers bytea NOT NULL, PRIMARY KEY (path, bucket, node));
    """,
    # 5: NUL and U+0001 in strings, coded (see schema_functions.NUL_FUNCTIONS).
    NUL_FUNCTIONS,
    # 6: the events partitioned by month, their ids unique through event_ids (see
    # tlytics.store.postgres.partitions).
    partition_events,
    # 7: declared properties (--property; see tlytics.store.postgres.declared).
    DECLARED_PROPERTIES,
    # 8: hourly counts of declared properties of few values (see
    # tlytics.store.postgres.preaggregates), from the values already stored.
    lambda connection: _add_property_counts(connection),
    # 9: the same counts summed over the keys (property_counts_all_keys), for the questions
    # that name no key, filled from property_counts.
    ALL_KEYS_MIGRATION,
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(connection: Connection) -> int:
    """The database's schema version; 0 when Tlytics never ran on it."""
    row = connection.execute("SELECT to_regclass('tlytics_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    version = connection.execute("SELECT version FROM tlytics_schema").fetchone()
    return 0 if version is None else cast(int, version[0])


def migrate_postgres(url: str) -> None:
    """Bring the database at `url` to this version's schema (creating it when empty), under an
    advisory lock so that nodes starting together migrate once; StoreError when it cannot,
    or when the database is newer than this code."""
    where = describe(url)
    with store_errors(f"migrating {where}"), connect(url, application="tlytics-migrate") as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            with connection.transaction():
                connection.execute("CREATE TABLE IF NOT EXISTS tlytics_schema (version integer NOT NULL)")
                version = schema_version(connection)
                if connection.execute("SELECT count(*) FROM tlytics_schema").fetchone() == (0,):
                    connection.execute("INSERT INTO tlytics_schema (version) VALUES (0)")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{where} has schema version {version}, newer than this Tlytics ({SCHEMA_VERSION}); upgrade Tlytics"
                )
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                with connection.transaction():
                    if isinstance(migration, str):
                        connection.execute(migration)
                    else:
                        migration(connection)
                    connection.execute("UPDATE tlytics_schema SET version = %s", (number,))
        finally:
            if not connection.broken:
                connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
