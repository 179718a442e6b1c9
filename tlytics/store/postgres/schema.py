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

# The SQL functions behind property filters, breakdowns and distinct counts: each reads a
# JSON value (`data::json #> path`, the stored text's own spelling) the way SQLite's
# json_type/json_extract do. Numbers get a key equal for equal values as SQLite compares them:
# an integer within 64 bits exactly, any other number as a double (shortest text), an
# integral double as that integer.
_FUNCTIONS = """
-- The stored text as json. PostgreSQL cannot hold NUL in text, and its json operators refuse a
-- whole document with a \\u0000 escape anywhere in it: such an escape is read as \\uffff
-- instead, so one event with it cannot fail every filtered read (its NUL then compares as
-- U+FFFF; the stored text is untouched).
CREATE FUNCTION tlytics_json(t text) RETURNS json
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT (CASE WHEN strpos(t, '\\u0000') > 0 THEN replace(t, '\\u0000', '\\uffff') ELSE t END)::json
$$;
CREATE FUNCTION tlytics_number_key(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN t ~ '^-?[0-9]{1,19}$' AND t::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
      THEN t::numeric::text
    WHEN t::float8 = trunc(t::float8) AND t::float8 >= -9223372036854775808 AND t::float8 < 9223372036854775808
      THEN t::float8::int8::text
    ELSE t::float8::text
  END
$$;
-- SQLite's json_type, with integers and reals as one kind "number".
CREATE FUNCTION tlytics_value_kind(v json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v) WHEN 'boolean' THEN v::text WHEN 'string' THEN 'text' ELSE json_typeof(v) END
$$;
-- The value breakdowns group by within a kind: a number's key, a string's text, else the JSON.
CREATE FUNCTION tlytics_group_value(v json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v)
    WHEN 'number' THEN tlytics_number_key(v::text) WHEN 'string' THEN v #>> '{}' ELSE v::text END
$$;
-- What SQLite's count(DISTINCT json_extract(...)) counts: json_extract gives true as 1 and
-- false as 0, a string as its text, a container as its JSON text, null as NULL (not counted).
CREATE FUNCTION tlytics_value_key(v json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v)
    WHEN 'number' THEN 'n' || tlytics_number_key(v::text)
    WHEN 'boolean' THEN CASE v::text WHEN 'true' THEN 'n1' ELSE 'n0' END
    WHEN 'string' THEN 's' || (v #>> '{}')
    WHEN 'null' THEN NULL
    ELSE 's' || v::text
  END
$$;
CREATE FUNCTION tlytics_matches_number(v json, number_key text, string_text text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v)
    WHEN 'number' THEN tlytics_number_key(v::text) = number_key
    WHEN 'string' THEN (v #>> '{}') = string_text
    ELSE false
  END
$$;
CREATE FUNCTION tlytics_matches_string(v json, string_text text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v) WHEN 'string' THEN (v #>> '{}') = string_text ELSE false END
$$;
"""


# Migration 3: the functions behind the ordering (`>` `>=` `<` `<=`) and contains (`~`) filters.
# A number compares as SQLite compares it: an integer within 64 bits exactly, any other number
# as the double it reads as (its shortest decimal, exact as `numeric`; a value beyond a
# double's range as an infinity or 0), and never as an error, whatever its spelling.
_FILTER_FUNCTIONS = """
-- The exact value of a JSON number's text; an exponent `numeric` cannot read (beyond what a
-- double holds except as 0 or an infinity) is read as that 0 or infinity.
CREATE FUNCTION tlytics_decimal_value(t text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN strpos(t, 'e') = 0 AND strpos(t, 'E') = 0 THEN t::numeric
    WHEN length(t) <= 60 AND substring(t from '[eE]([+-]?[0-9]+)$')::numeric BETWEEN -900 AND 900
      THEN t::numeric
    WHEN substring(t from '[eE]([+-]?[0-9]+)$')::numeric < 0 OR t ~ '^-?[0.]*[eE]' THEN 0
    WHEN t ~ '^-' THEN '-Infinity'::numeric
    ELSE 'Infinity'::numeric
  END
$$;
-- A value as the nearest double, as `numeric`: the double's shortest decimal, which orders
-- doubles as they order, or its exact integer.
CREATE FUNCTION tlytics_double_value(n numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN abs(n) >= 1.7976931348623158e308 THEN CASE WHEN n < 0 THEN '-Infinity'::numeric ELSE 'Infinity'::numeric END
    WHEN abs(n) < 2.5e-324 THEN 0
    -- Beyond 2^53 a double is an integer: exact as int8 (its shortest decimal is not, and
    -- would misorder it against a 64-bit integer).
    WHEN abs(n::float8) >= 9007199254740992 AND n::float8 >= -9223372036854775808 AND n::float8 < 9223372036854775808
      THEN n::float8::int8::numeric
    ELSE n::float8::text::numeric
  END
$$;
-- Migration 2's tlytics_json, the same answers, no longer STRICT: PostgreSQL inlines a SQL
-- function only when it can prove it strict, which a CASE is not, and a call per row costs
-- more than the parsing itself (a NULL text still gives NULL: strpos and the cast pass it on).
CREATE OR REPLACE FUNCTION tlytics_json(t text) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE WHEN strpos(t, '\\u0000') > 0 THEN replace(t, '\\u0000', '\\uffff') ELSE t END)::json
$$;
-- A double's equality key (`d` is its shortest decimal): an integral one within 64 bits as
-- that integer, else its text; compared as the double itself (-2^63 is in range, although
-- its shortest decimal, -9223372036854776000, is not).
CREATE FUNCTION tlytics_double_key(d numeric) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN d::float8 = trunc(d::float8) AND d::float8 >= -9223372036854775808 AND d::float8 < 9223372036854775808
      THEN d::float8::int8::text
    ELSE d::float8::text
  END
$$;
-- The equality key of migration 2, the same wherever that one answered, but never an error:
-- it read every number as float8, which refuses a valid JSON integer beyond a double's range
-- (`1` and 400 zeros) and a number too small for one (`1e-400`).
CREATE OR REPLACE FUNCTION tlytics_number_key(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN t ~ '^-?[0-9]{1,19}$' AND t::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
      THEN t::numeric::text
    ELSE tlytics_double_key(tlytics_double_value(tlytics_decimal_value(t)))
  END
$$;
CREATE FUNCTION tlytics_number_value(t text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN t ~ '^-?[0-9]{1,19}$' AND t::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 THEN t::numeric
    ELSE tlytics_double_value(tlytics_decimal_value(t))
  END
$$;
-- A JSON number's value; NULL for any other value or a missing one. The wrappers that read
-- their JSON argument more than once are PL/pgSQL: PostgreSQL does not inline a SQL function
-- whose costly argument (the property read from `data`) it would evaluate twice, and a SQL
-- function that is not inlined costs tens of microseconds a row; PL/pgSQL a few.
CREATE FUNCTION tlytics_json_number(v json) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  IF json_typeof(v) = 'number' THEN
    RETURN tlytics_number_value(v::text);
  END IF;
  RETURN NULL;
END
$$;
-- Migration 2's equality functions, the same answers as PL/pgSQL (see above).
CREATE OR REPLACE FUNCTION tlytics_matches_number(v json, number_key text, string_text text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  CASE json_typeof(v)
    WHEN 'number' THEN RETURN tlytics_number_key(v::text) = number_key;
    WHEN 'string' THEN RETURN (v #>> '{}') = string_text;
    ELSE RETURN false;
  END CASE;
END
$$;
CREATE OR REPLACE FUNCTION tlytics_matches_string(v json, string_text text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN json_typeof(v) = 'string' AND (v #>> '{}') = string_text;
END
$$;
CREATE OR REPLACE FUNCTION tlytics_value_key(v json) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
  CASE json_typeof(v)
    WHEN 'number' THEN RETURN 'n' || tlytics_number_key(v::text);
    WHEN 'boolean' THEN RETURN CASE v::text WHEN 'true' THEN 'n1' ELSE 'n0' END;
    WHEN 'string' THEN RETURN 's' || (v #>> '{}');
    WHEN 'null' THEN RETURN NULL;
    ELSE RETURN 's' || v::text;
  END CASE;
END
$$;
-- Whether a JSON string contains `needle` (already ASCII-lowered), ASCII letters folded.
CREATE FUNCTION tlytics_contains_text(v json, needle text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN json_typeof(v) = 'string'
    AND strpos(translate(v #>> '{}', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'), needle) > 0;
END
$$;
"""


# Migration 5: NUL in strings. PostgreSQL text cannot hold U+0000, so a `\u0000` escape is
# read as the two characters U+0001 U+0001, and a `\u0001` as U+0001 U+0002: a code that tells
# every string apart and orders them as SQLite does (Python applies it to the filter values,
# see filters.pg_text, and undoes it on the way out). Migration 2's version read `\u0000` as
# U+FFFF, which made a NUL equal U+FFFF, and it rewrote the six characters `\u0000` of an
# escaped backslash followed by `u0000` too. An escape is one preceded by an even number of
# backslashes. Substring search must look at whole codes only (tlytics_contains_text).
_NUL_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION tlytics_json(t text) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE WHEN strpos(t, '\u000') = 0 THEN t ELSE regexp_replace(
    regexp_replace(t, '(?<!\\)((?:\\\\)*)\\u0001', '\1\\u0001\\u0002', 'g'),
    '(?<!\\)((?:\\\\)*)\\u0000', '\1\\u0001\\u0001', 'g') END)::json
$$;
-- Whether `hay` (coded as above) contains `needle` (coded too): at a whole code only, so a
-- needle never matches the second half of a code.
CREATE FUNCTION tlytics_contains_coded(hay text, needle text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  i integer := 1;
  stop integer := length(hay) - length(needle) + 1;
BEGIN
  WHILE i <= stop LOOP
    IF substr(hay, i, length(needle)) = needle THEN
      RETURN true;
    END IF;
    i := i + CASE WHEN substr(hay, i, 1) = chr(1) THEN 2 ELSE 1 END;
  END LOOP;
  RETURN false;
END
$$;
CREATE OR REPLACE FUNCTION tlytics_contains_text(v json, needle text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  hay text;
BEGIN
  IF json_typeof(v) <> 'string' THEN
    RETURN false;
  END IF;
  hay := translate(v #>> '{}', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');
  IF strpos(hay, chr(1)) > 0 THEN
    RETURN tlytics_contains_coded(hay, needle);
  END IF;
  RETURN strpos(hay, needle) > 0;
END
$$;
"""


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
        {_FUNCTIONS}
        """
    )


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
    _FILTER_FUNCTIONS,
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
    # 5: NUL and U+0001 in strings, coded (see _NUL_FUNCTIONS).
    _NUL_FUNCTIONS,
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
