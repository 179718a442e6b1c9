"""The backfill of declared properties (tlytics.store.sqlite.properties) on a store that held
events before they were declared: a chunk of events per transaction, on the write connection,
between the writer's own transactions.

What makes it fast (issue 21: it ran at half the writer's inline rate, mostly maintaining the
value index in the order of the events):
- one walk over each chunk's events extracts every property pending at that position (the
  JSON of an event is parsed once per statement, whatever the number of properties);
- the extracted values go into a temporary table first, so a counted property's counts come
  from them instead of a second JSON pass (leaving out the values the inserts stored
  meanwhile: a probe of the values' primary key, in order, for counted properties only);
- they are stored sorted the way the value index (property, kind, value, ts) is: each page of
  that index is visited once per chunk, in order, instead of once per value in event order
  (random writes that spill SQLite's page cache at 10M events);
- chunks grow while they hold the write lock for less than `TARGET_CHUNK_S` (the writer waits
  for one chunk at most), since a bigger chunk puts more values on each index page it visits.

Properties whose backfill stopped at different positions (one declared later, or stopped)
are walked in the order of their positions; a chunk of the one behind ends where the next one
stands, so they meet and go on together. Progress is each property's (ts, id) position of the
last event done, in the chunk's transaction: a stopped or killed backfill resumes there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import cast

import apsw
import structlog

from tlytics.store.sqlite.preaggregates import add_backfill_counts

log = structlog.get_logger("tlytics.store")

# Events per chunk: never fewer than the 20,000 of the backfill before (each chunk rewrites
# every index page its values land on, a cost per chunk, not per value), more while a chunk
# holds the write lock for less than `TARGET_CHUNK_S` (what an insert may wait for; growth is
# at most twice per chunk, so a slower chunk overshoots it by little).
FIRST_CHUNK = MIN_CHUNK = 20_000
MAX_CHUNK = 200_000
TARGET_CHUNK_S = 1.0

_PATHS_TABLE = "CREATE TEMP TABLE IF NOT EXISTS backfill_paths (number INTEGER PRIMARY KEY, json_path TEXT NOT NULL)"
_VALUES_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS backfill_values (property INTEGER NOT NULL, ts INTEGER NOT NULL,"
    " id BLOB NOT NULL, key TEXT NOT NULL, kind INTEGER NOT NULL, value)"
)
# The (ts, id) position of the last event of a chunk of ?3 + 1 events after position (?1, ?2).
_CHUNK_END = "SELECT ts, id FROM events WHERE (ts, id) > (?1, ?2) ORDER BY ts, id LIMIT 1 OFFSET ?3"
# The kind of event e's value at path p.json_path (tlytics.store.sqlite.properties' kinds).
KIND_AT_PATH = (
    "CASE json_type(e.data, p.json_path) WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'text' THEN 2"
    " WHEN 'true' THEN 3 WHEN 'false' THEN 4 WHEN 'null' THEN 5 WHEN 'object' THEN 6 WHEN 'array' THEN 7 END"
)
# The values of the properties in temp.backfill_paths of the events in `condition`'s range:
# the events outside, the properties inside (CROSS JOIN fixes that order), so one event's JSON
# is parsed once and reused from SQLite's JSON cache. Values the inserts stored meanwhile are
# met again: storing keeps them once (ON CONFLICT, the primary key's own probe), and a counted
# property's counts leave them out (tlytics.store.sqlite.preaggregates.add_backfill_counts).
_EXTRACT = (
    f"INSERT INTO temp.backfill_values SELECT p.number, e.ts, e.id, e.key, {KIND_AT_PATH}, json_extract(e.data, p.json_path)"
    " FROM events e CROSS JOIN temp.backfill_paths p WHERE {condition} AND json_type(e.data, p.json_path) IS NOT NULL"
)
_STORE = (
    "INSERT INTO property_values (property, ts, id, kind, value) SELECT property, ts, id, kind, value"
    " FROM temp.backfill_values WHERE true ORDER BY property, kind, value, ts, id ON CONFLICT DO NOTHING"
)

Position = tuple[int, bytes]


def next_chunk_size(size: int, seconds: float) -> int:
    """The next chunk's events after `size` events took `seconds`: about `TARGET_CHUNK_S` of
    work, at most twice the last, within [MIN_CHUNK, MAX_CHUNK]."""
    wanted = int(size * TARGET_CHUNK_S / max(seconds, 1e-3))
    return max(MIN_CHUNK, min(MAX_CHUNK, 2 * size, wanted))


class PropertyBackfill:
    """Backfills every incomplete declared property of the store on `connection`, each chunk
    in a transaction taken under `lock` (the writer's); `counted` is the keeper's set of the
    properties whose counts are kept (a property that stops being counted leaves it)."""

    def __init__(self, connection: apsw.Connection, lock: threading.Lock, counted: set[int]) -> None:
        self._connection = connection
        self._lock = lock
        self._counted = counted
        self.chunk_size = FIRST_CHUNK
        connection.execute(_PATHS_TABLE)
        connection.execute(_VALUES_TABLE)

    def run(self, stopped: Callable[[], bool]) -> None:
        """Chunk after chunk until every property is complete or `stopped()`."""
        while not stopped():
            with self._lock:
                started = time.perf_counter()
                with self._connection:
                    size = self.chunk_size
                    more = self._chunk(size)
                self.chunk_size = next_chunk_size(size, time.perf_counter() - started)
            if not more:
                return

    def _chunk(self, size: int) -> bool:
        """Backfill the next chunk of at most `size` events for the properties furthest
        behind; whether any property is still incomplete."""
        connection = self._connection
        pending = connection.execute(
            "SELECT number, path, backfilled_ts, backfilled_id FROM declared_properties WHERE NOT complete"
            " ORDER BY backfilled_ts, backfilled_id"
        ).fetchall()
        if not pending:
            return False
        start: Position = (cast(int, pending[0][2]), cast(bytes, pending[0][3]))
        walking = [(cast(int, n), cast(str, p)) for n, p, ts, id_ in pending if (ts, id_) == start]
        ahead = [(cast(int, ts), cast(bytes, id_)) for _, _, ts, id_ in pending if (ts, id_) != start]
        row = connection.execute(_CHUNK_END, (*start, size - 1)).fetchone()
        end: Position | None = (cast(int, row[0]), cast(bytes, row[1])) if row is not None else None
        if ahead and (end is None or ahead[0] < end):
            end = ahead[0]  # meet the next property where it stands, then walk on together
        condition, params = "(e.ts, e.id) > (?, ?)", [*start]
        if end is not None:
            condition, params = condition + " AND (e.ts, e.id) <= (?, ?)", [*start, *end]
        connection.execute("DELETE FROM temp.backfill_paths")
        connection.executemany(
            "INSERT INTO temp.backfill_paths (number, json_path) VALUES (?, ?)",
            [(number, "$." + path) for number, path in walking],
        )
        connection.execute("DELETE FROM temp.backfill_values")
        connection.execute(_EXTRACT.format(condition=condition), params)
        for number, _ in walking:
            if number in self._counted and not add_backfill_counts(connection, number):
                self._counted.discard(number)
        connection.execute(_STORE)
        connection.execute("DELETE FROM temp.backfill_values")
        done = end is None
        connection.executemany(
            "UPDATE declared_properties SET backfilled_ts = ?, backfilled_id = ?, complete = ? WHERE number = ?",
            [(*(end or start), done, number) for number, _ in walking],
        )
        if done:
            for _, path in walking:
                log.info("property_backfill_done", property=f"data.{path}")
        return not done or bool(ahead)
