"""Declared properties (`--property data.amount`) on PostgreSQL: each event's value of each
declared property, kept in `property_values` beside the events, typed as the filters read it,
so a `where`, breakdown or distinct count on it reads an index instead of parsing the JSON of
every event in range (the SQLite store's tlytics.store.sqlite.properties, for several nodes).

A value is stored once per (property, event): `kind` is its JSON type with the SQLite store's
codes (numbers one kind), `num` a number's exact value (orderings), `val` the text the
breakdowns group by (tlytics_group_value: a number's equality key, a string's text, else the
JSON), so a condition on them selects the very events the JSON condition selects. A missing
property has no row.

Every node's writer stores the values of every property in `declared_properties` (the list is
read inside each insert's transaction), so nodes declared alike or not, no event goes without
its values. Declaring takes the erasure lock exclusively: no insert is half-way then, and
every later one stores the new property's values; a backfill thread then walks the events
older than that in (ts, id) order, a chunk per transaction under the same lock (inserts wait
for one chunk at most), and marks the property `complete`. Reads use a property only once it
is complete, and parse the JSON until then, so every answer is exact at every moment.
Deletions take values away in their own transaction (erasure and retention: writes.py,
partition_retention.py). The values of a property of few values are also counted per hour
(tlytics.store.postgres.preaggregates), in the same statements.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

import structlog

from tlytics.store.backfill_retry import run_until_done
from tlytics.store.postgres.connection import connect, store_errors
from tlytics.store.postgres.filters import (
    ARRAY,
    FALSE,
    INDEXED_CHARS,
    NULL,
    NUMBER,
    OBJECT,
    TEXT,
    TRUE,
    property_value,
)
from tlytics.store.postgres.partitions import Connection, Cursor
from tlytics.store.postgres.preaggregates import forget_stale_counts, store_and_count
from tlytics.timefmt import MIN_US

log = structlog.get_logger("tlytics.store")


# Migration 7.
MIGRATION = f"""
CREATE TABLE declared_properties (
    number serial PRIMARY KEY,
    path text NOT NULL UNIQUE,
    backfill_ts bigint NOT NULL DEFAULT {MIN_US - 1},
    backfill_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    complete boolean NOT NULL DEFAULT false
);
CREATE TABLE property_values (
    property integer NOT NULL,
    ts bigint NOT NULL,
    id uuid NOT NULL,
    kind smallint NOT NULL,
    num numeric,
    val text COLLATE "C" NOT NULL,
    PRIMARY KEY (property, ts, id)
);
CREATE INDEX property_values_by_value ON property_values (property, kind, left(val, {INDEXED_CHARS}), ts);
CREATE INDEX property_values_by_number ON property_values (property, num, ts) WHERE kind = {NUMBER};
"""

# The typed columns of a JSON value `v`: its kind, tlytics_json_number(v) and
# tlytics_group_value(v), written out: those functions cost up to 0.7 ms a call when not
# inlined, this a few µs; an integer of up to 18 digits (exact as bigint) skips them.
_SHORT_INTEGER = "v::text ~ '^-?[0-9]{1,18}$'"
_TYPED = (
    f"CASE json_typeof(v) WHEN 'number' THEN {NUMBER} WHEN 'string' THEN {TEXT}"
    f" WHEN 'boolean' THEN CASE v::text WHEN 'true' THEN {TRUE} ELSE {FALSE} END"
    f" WHEN 'null' THEN {NULL} WHEN 'object' THEN {OBJECT} ELSE {ARRAY} END,"
    f" CASE WHEN json_typeof(v) = 'number' THEN"
    f" (CASE WHEN {_SHORT_INTEGER} THEN v::text::numeric ELSE tlytics_number_value(v::text) END) END,"
    f" CASE json_typeof(v) WHEN 'number' THEN"
    f" (CASE WHEN {_SHORT_INTEGER} THEN v::text::bigint::text ELSE tlytics_number_key(v::text) END)"
    " WHEN 'string' THEN v #>> '{}' ELSE v::text END"
)
# The values of property %s from `rows` (a query with ts, id, data). OFFSET 0 keeps the value
# read from the JSON once per row, not once per column.
_ADD_VALUES = (
    "INSERT INTO property_values (property, ts, id, kind, num, val)"
    " SELECT %s, ts, id, {typed} FROM (SELECT ts, id, {value} AS v FROM ({rows}) r OFFSET 0) x"
    " WHERE v IS NOT NULL ON CONFLICT DO NOTHING"
)
# The rows this transaction inserted (the writer keeps them: not the duplicates it skipped).
_INSERTED_ROWS = "SELECT ts, id, key, data FROM inserted_now"
# A chunk of the events after the backfill's position, in (ts, id) order.
_CHUNK_ROWS = "SELECT ts, id, key, data FROM events WHERE ts >= %s AND (ts, id) > (%s, %s) ORDER BY ts, id LIMIT %s"
_CHUNK_ROWS_NAMED = (
    "SELECT ts, id, key, data FROM events WHERE ts >= %(after_ts)s AND (ts, id) > (%(after_ts)s, %(after_id)s)"
    " ORDER BY ts, id LIMIT %(chunk)s"
)
BACKFILL_CHUNK = 20_000
_STOP_WAIT_S = 60.0


def add_values(cursor: Cursor, number: int, path: str, rows: str, rows_params: Sequence[Any]) -> None:
    """Store property `number` (at `path`) of the events `rows` selects."""
    value, value_params = property_value(path)
    cursor.execute(_ADD_VALUES.format(typed=_TYPED, value=value, rows=rows), (number, *value_params, *rows_params))


def add_inserted(cursor: Cursor, node: str = "") -> None:
    """Store every declared property's values of the rows this transaction inserted, and count
    those of the counted properties in `node`'s rows (inside the insert's transaction, under
    the shared erasure lock; in the order of the properties' numbers, as every node does)."""
    declared = cursor.execute("SELECT number, path, counted FROM declared_properties ORDER BY number").fetchall()
    for number, path, counted in declared:
        if counted:
            store_and_count(cursor, cast(int, number), str(path), _TYPED, _INSERTED_ROWS, {}, node)
        else:
            add_values(cursor, cast(int, number), str(path), _INSERTED_ROWS, ())


def declare(connection: Connection, paths: Sequence[str] | None, erasure_lock: int) -> bool:
    """Declare `paths` (forgetting the declared ones it lacks; None keeps them all, as a tool
    must not undo the servers' settings); return whether a backfill is pending."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (erasure_lock,))
        known = {
            str(path): cast(int, number)
            for path, number in cursor.execute("SELECT path, number FROM declared_properties").fetchall()
        }
        if paths is not None:
            for gone in set(known) - set(paths):
                cursor.execute("DELETE FROM property_values WHERE property = %s", (known[gone],))
                forget_stale_counts(cursor, known[gone])
                cursor.execute("DELETE FROM declared_properties WHERE number = %s", (known[gone],))
                log.info("property_forgotten", property=f"data.{gone}")
            for new in dict.fromkeys(paths):
                if new not in known:
                    cursor.execute("INSERT INTO declared_properties (path) VALUES (%s)", (new,))
        forget_stale_counts(cursor)
        pending = cursor.execute("SELECT EXISTS (SELECT 1 FROM declared_properties WHERE NOT complete)").fetchone()
    return bool(pending and pending[0])


class Backfill:
    """The thread that backfills incomplete declared properties, on a connection of its own;
    its progress is kept in the store, so a stopped backfill resumes at the next start (on
    whichever node starts first)."""

    def __init__(self, url: str, erasure_lock: int) -> None:
        self._url = url
        self._erasure_lock = erasure_lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tlytics-property-backfill", daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Stop after the current chunk."""
        self._stop.set()
        self._thread.join(_STOP_WAIT_S)

    def _run(self) -> None:
        run_until_done(self._backfill_pending, self._stop)  # a failure (PostgreSQL restarted) is tried again

    def _backfill_pending(self) -> None:
        with (
            store_errors("backfilling declared properties"),
            connect(self._url, application="tlytics-property-backfill") as connection,
        ):
            pending = connection.execute(
                "SELECT number, path FROM declared_properties WHERE NOT complete ORDER BY number"
            ).fetchall()
            for number, path in pending:
                self._backfill(connection, cast(int, number), str(path))

    def _backfill(self, connection: Connection, number: int, path: str) -> None:
        log.info("property_backfill_started", property=f"data.{path}")
        while not self._stop.is_set():
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._erasure_lock,))
                row = cursor.execute(
                    "SELECT backfill_ts, backfill_id, counted FROM declared_properties WHERE number = %s"
                    " AND NOT complete",
                    (number,),
                ).fetchone()
                if row is None:
                    return  # forgotten, or completed by another node's backfill
                after_ts, after_id, counted = row
                chunk = (after_ts, after_ts, after_id, BACKFILL_CHUNK)
                if counted:
                    # Only the values stored now are counted: the inserts counted theirs.
                    position = {"after_ts": after_ts, "after_id": after_id, "chunk": BACKFILL_CHUNK}
                    store_and_count(cursor, number, path, _TYPED, _CHUNK_ROWS_NAMED, position, "")
                else:
                    add_values(cursor, number, path, _CHUNK_ROWS, chunk)
                last = cursor.execute(
                    f"SELECT count(*), (array_agg(ts ORDER BY ts DESC, id DESC))[1],"
                    f" (array_agg(id ORDER BY ts DESC, id DESC))[1] FROM ({_CHUNK_ROWS}) c",
                    chunk,
                ).fetchone()
                assert last is not None  # an aggregate always answers one row
                count, last_ts, last_id = last
                done = cast(int, count) < BACKFILL_CHUNK
                cursor.execute(
                    "UPDATE declared_properties SET backfill_ts = coalesce(%s, backfill_ts),"
                    " backfill_id = coalesce(%s, backfill_id), complete = %s WHERE number = %s",
                    (last_ts, last_id, done, number),
                )
            if done:
                log.info("property_backfill_done", property=f"data.{path}")
                return
