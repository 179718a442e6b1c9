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
of events per transaction between the writer's; reads use a property only once it is `complete` and parse the JSON
until then, so every answer is exact at every moment.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import cast

import apsw
import structlog

from tlytics.chunks import chunks
from tlytics.store.sqlite.connection import store_errors

log = structlog.get_logger("tlytics.store")

# JSON types as stored in property_values.kind.
NUMBER, TEXT, TRUE, FALSE, NULL, OBJECT, ARRAY = range(1, 8)
KIND_CODES = {"true": TRUE, "false": FALSE, "null": NULL}
# ?1 is the property's JSON path; NULL when the property is missing.
KIND_SQL = (
    "CASE json_type(data, ?1) WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'text' THEN 2 WHEN 'true' THEN 3"
    " WHEN 'false' THEN 4 WHEN 'null' THEN 5 WHEN 'object' THEN 6 WHEN 'array' THEN 7 END"
)
# The values of the events `condition` selects (its parameters from ?3) for property ?2. A
# backfill may meet an event the insert path already stored (a reused seq): kept once.
_ADD_VALUES = (
    f"INSERT INTO property_values (property, ts, id, kind, value) SELECT ?2, ts, id, {KIND_SQL},"
    " json_extract(data, ?1) FROM events WHERE {condition} AND json_type(data, ?1) IS NOT NULL"
    " ON CONFLICT DO NOTHING"
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
BACKFILL_CHUNK = 20_000  # events per backfill transaction: the writer waits for one at most
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
        with connection:
            known = {
                cast(str, row[0]): (cast(int, row[1]), bool(row[2]))
                for row in connection.execute("SELECT path, number, complete FROM declared_properties")
            }
            wanted = tuple(dict.fromkeys(paths)) if paths is not None else tuple(sorted(known))
            for gone in set(known) - set(wanted):
                self._forget(known[gone][0])
            last_seq = cast(int, connection.execute("SELECT coalesce(max(seq), 0) FROM events").get)
            for new in wanted:
                if new not in known:
                    # Events up to last_seq are backfilled; later ones come through the inserts.
                    connection.execute(
                        "INSERT INTO declared_properties (path, backfill_from, backfill_to, complete)"
                        " VALUES (?, 0, ?, ?)",
                        (new, last_seq, last_seq == 0),
                    )
            self.numbers = {
                cast(str, p): cast(int, n)
                for p, n in connection.execute("SELECT path, number FROM declared_properties")
            }
            pending = connection.execute("SELECT EXISTS (SELECT 1 FROM declared_properties WHERE NOT complete)").get
        if pending:
            self._thread = threading.Thread(target=self._backfill_all, name="tlytics-property-backfill", daemon=True)
            self._thread.start()

    def _forget(self, number: int) -> None:
        self._connection.execute("DELETE FROM property_values WHERE property = ?", (number,))
        self._connection.execute("DELETE FROM declared_properties WHERE number = ?", (number,))

    def add_new_rows(self, last_seq: int) -> None:
        """Store the values of the events inserted after `last_seq` (this transaction's)."""
        for path, number in self.numbers.items():
            self._connection.execute(_ADD_VALUES.format(condition="seq > ?3"), ("$." + path, number, last_seq))

    def forget_events(self, ids: Sequence[bytes]) -> None:
        """Take the values of the events `ids`, about to be deleted, away (inside the deletion's
        transaction)."""
        for number in self.numbers.values():
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
        kept in the store, so a stopped backfill resumes at the next start."""
        try:
            with store_errors(f"backfilling declared properties of {self._store_path}"):
                with self.lock, self._connection:
                    pending = self._connection.execute(
                        "SELECT number, path FROM declared_properties WHERE NOT complete"
                    ).fetchall()
                for number, path in pending:
                    self._backfill(cast(int, number), cast(str, path))
        except Exception as exc:  # a thread's error would vanish: logged, retried at the next start
            log.error("property_backfill_failed", error=str(exc))

    def _backfill(self, number: int, path: str) -> None:
        log.info("property_backfill_started", property=f"data.{path}")
        connection = self._connection
        while not self._stop.is_set():
            with self.lock, connection:
                row = connection.execute(
                    "SELECT backfill_from, backfill_to FROM declared_properties WHERE number = ?", (number,)
                ).fetchone()
                if row is None:
                    return
                start, end = cast(int, row[0]), cast(int, row[1])
                upper = min(start + BACKFILL_CHUNK, end)
                connection.execute(
                    _ADD_VALUES.format(condition="seq > ?3 AND seq <= ?4"), ("$." + path, number, start, upper)
                )
                connection.execute(
                    "UPDATE declared_properties SET backfill_from = ?, complete = ? WHERE number = ?",
                    (upper, upper >= end, number),
                )
            if upper >= end:
                log.info("property_backfill_done", property=f"data.{path}")
                return

    def close(self) -> None:
        """Stop the backfill after its current chunk (it resumes at the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_STOP_WAIT_S)
