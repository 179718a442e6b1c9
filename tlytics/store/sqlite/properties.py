"""Declared properties (`--property data.amount`): each event's value of each declared property,
kept by the writer in `property_values` beside the events, so a `where` on it reads an index
instead of parsing the JSON of every event in range.

A value is stored once per (property, event) as the filters read it: `kind` is its JSON type
(integers and reals are one kind, as every filter treats them) and `value` is exactly what
`json_extract` gives, in an untyped column (no affinity: `"5"` stays text, `5` an integer), so
a condition on (`kind`, `value`) selects the very events its JSON form selects. A missing
property has no row.

Rows are added in each insert's transaction, taken away in each deletion's, and a property
declared on a store that already holds events is backfilled by a thread of its own, a chunk
of events per transaction between the writer's (tlytics.store.sqlite.property_backfill); reads use a property only once it is `complete` and parse the JSON
until then, so every answer is exact at every moment.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import cast

import apsw
import structlog

from tlytics.chunks import chunks
from tlytics.store.backfill_retry import run_until_done
from tlytics.store.sqlite.connection import store_errors
from tlytics.store.sqlite.preaggregates import (
    add_new_counts,
    counted_numbers,
    forget_counts,
    prepare,
    subtract_counts,
)
from tlytics.store.sqlite.property_backfill import KIND_AT_PATH, PropertyBackfill
from tlytics.store.sqlite.schema import BEFORE_EVERY_POSITION

log = structlog.get_logger("tlytics.store")

# JSON types as stored in property_values.kind.
NUMBER, TEXT, TRUE, FALSE, NULL, OBJECT, ARRAY = range(1, 8)
KIND_CODES = {"true": TRUE, "false": FALSE, "null": NULL}
# The values of every declared property (temp.declared_paths) of an insert's new events, in
# one statement: each event's JSON is parsed once and reused from SQLite's JSON cache for every
# property (one statement per property parsed it once per property, three times per value).
# The counts of the counted ones are made from them (tlytics.store.sqlite.preaggregates).
_PATHS_TABLE = "CREATE TEMP TABLE IF NOT EXISTS declared_paths (number INTEGER PRIMARY KEY, json_path TEXT NOT NULL)"
_VALUES_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS new_values (property INTEGER NOT NULL, ts INTEGER NOT NULL, id BLOB NOT NULL,"
    " key TEXT NOT NULL, kind INTEGER NOT NULL, value)"
)
_EXTRACT_NEW = (
    f"INSERT INTO temp.new_values SELECT p.number, e.ts, e.id, e.key, {KIND_AT_PATH}, json_extract(e.data, p.json_path)"
    " FROM temp.new_events e CROSS JOIN temp.declared_paths p WHERE json_type(e.data, p.json_path) IS NOT NULL"
)
# Stored sorted the way the value index (property, kind, value, ts) is, so that each of its
# pages is visited once per insert, in order, instead of once per value in event order: the
# index is the costly part of a declared property (random writes that spilled SQLite's page
# cache at a few hundred thousand events; bench/declared_ingest.py). The primary key's rows
# are appended at a few points (one per property) either way.
_STORE_NEW = (
    "INSERT INTO property_values (property, ts, id, kind, value) SELECT property, ts, id, kind, value"
    " FROM temp.new_values WHERE true ORDER BY property, kind, value, ts, id ON CONFLICT DO NOTHING"
)
# A breakdown of declared property ?1 over [?2, ?3), grouped and ordered as the JSON path groups
# and orders it (by the kind's name, numbers as one kind).
BREAKDOWN_TOP = (
    f"SELECT CASE kind WHEN {NUMBER} THEN 'number' WHEN {TEXT} THEN 'text' WHEN {TRUE} THEN 'true'"
    f" WHEN {FALSE} THEN 'false' WHEN {NULL} THEN 'null' WHEN {OBJECT} THEN 'object' ELSE 'array' END AS kind_name,"
    " value, count(*) AS n FROM property_values WHERE property = ?1 AND ts >= ?2 AND ts < ?3"
    " GROUP BY kind_name, value ORDER BY n DESC, kind_name, value LIMIT ?4"
)
BREAKDOWN_PRESENT = "SELECT count(*) FROM property_values WHERE property = ? AND ts >= ? AND ts < ?"
# Distinct values as count(DISTINCT json_extract(...)) counts them: the same SQL values.
UNIQUE_VALUES = "SELECT count(DISTINCT value) FROM property_values WHERE property = ? AND ts >= ? AND ts < ?"
_STOP_WAIT_S = 60.0


def complete_properties(connection: apsw.Connection) -> dict[str, int]:
    """The declared properties whose values cover every stored event: path -> number. Read it
    inside the read transaction that uses it."""
    rows = connection.execute("SELECT path, number FROM declared_properties WHERE complete")
    return {cast(str, path): cast(int, number) for path, number in rows}


class PropertyKeeper:
    """The writer's side: keeps the values of `paths` on its write connection, declaring those
    new to the store (their backfill runs on a thread of its own) and forgetting those it has
    but `paths` lacks; None keeps the ones the store has (a tool must not undo the server's
    settings)."""

    def __init__(self, connection: apsw.Connection, path: str, paths: Sequence[str] | None) -> None:
        self._connection = connection
        self._store_path = path
        # Held by each write transaction of the writer and each chunk of the backfill thread.
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        prepare(connection)
        connection.execute(_PATHS_TABLE)
        connection.execute(_VALUES_TABLE)
        with connection:
            known = {
                cast(str, row[0]): (cast(int, row[1]), bool(row[2]))
                for row in connection.execute("SELECT path, number, complete FROM declared_properties")
            }
            wanted = tuple(dict.fromkeys(paths)) if paths is not None else tuple(sorted(known))
            for gone in set(known) - set(wanted):
                self._forget(known[gone][0])
            empty = connection.execute("SELECT NOT EXISTS (SELECT 1 FROM events)").get == 1
            for new in wanted:
                if new not in known:
                    # The backfill walks every event stored now, from the first; those inserted
                    # from now on get their values from the inserts.
                    connection.execute(
                        "INSERT INTO declared_properties (path, backfilled_ts, backfilled_id, complete)"
                        " VALUES (?, ?, ?, ?)",
                        (new, *BEFORE_EVERY_POSITION, empty),
                    )
            self.numbers = {
                cast(str, p): cast(int, n)
                for p, n in connection.execute("SELECT path, number FROM declared_properties")
            }
            connection.execute("DELETE FROM temp.declared_paths")
            connection.executemany(
                "INSERT INTO temp.declared_paths (number, json_path) VALUES (?, ?)",
                [(number, "$." + path) for path, number in self.numbers.items()],
            )
            # Those whose hourly counts are kept (tlytics.store.sqlite.preaggregates).
            self.counted = set(counted_numbers(connection))
            pending = connection.execute("SELECT EXISTS (SELECT 1 FROM declared_properties WHERE NOT complete)").get
        if pending:
            self._thread = threading.Thread(target=self._backfill_all, name="tlytics-property-backfill", daemon=True)
            self._thread.start()

    def _forget(self, number: int) -> None:
        forget_counts(self._connection, number)
        self._connection.execute("DELETE FROM property_values WHERE property = ?", (number,))
        self._connection.execute("DELETE FROM declared_properties WHERE number = ?", (number,))

    def add_new_rows(self) -> None:
        """Store the values of this transaction's new events (the writer's staged rows), and
        count those of the counted properties."""
        if not self.numbers:
            return
        connection = self._connection
        connection.execute("DELETE FROM temp.new_values")
        connection.execute(_EXTRACT_NEW)
        for number in sorted(self.counted):
            if not add_new_counts(connection, number):
                self.counted.discard(number)
        connection.execute(_STORE_NEW)

    def forget_events(self, ids: Sequence[bytes]) -> None:
        """Take the values of the events `ids`, about to be deleted, away (inside the deletion's
        transaction)."""
        for number in self.numbers.values():
            if number in self.counted:
                subtract_counts(self._connection, number, ids)
            for chunk in chunks(ids):
                marks = ",".join("?" * len(chunk))
                self._connection.execute(
                    "DELETE FROM property_values WHERE property = ? AND (ts, id) IN"
                    f" (SELECT ts, id FROM events WHERE id IN ({marks}))",
                    (number, *chunk),
                )

    def wait_backfilled(self, timeout_s: float) -> bool:
        """Whether every backfill finished within `timeout_s` (for tools and tests)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def _backfill_all(self) -> None:
        """Backfill every incomplete property, a chunk of events per transaction on the write
        connection, taken between the writer's own (`lock`: a second connection's commit would
        make the writer's next transaction fail at once, its snapshot stale); the progress is
        kept in the store (the (ts, id) position of the last event done), so a stopped backfill
        resumes at the next start, and a failed attempt is tried again (run_until_done)."""
        announced = False

        def attempt() -> None:
            nonlocal announced
            with store_errors(f"backfilling declared properties of {self._store_path}"):
                with self.lock:
                    backfill = PropertyBackfill(self._connection, self.lock, self.counted)
                    with self._connection:
                        pending = self._connection.execute(
                            "SELECT path FROM declared_properties WHERE NOT complete"
                        ).fetchall()
                if not announced:
                    for (path,) in pending:
                        log.info("property_backfill_started", property=f"data.{path}")
                    announced = True
                backfill.run(self._stop.is_set)

        run_until_done(attempt, self._stop)

    def close(self) -> None:
        """Stop the backfill after its current chunk (it resumes at the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_STOP_WAIT_S)
