"""Pre-aggregates of declared low-cardinality properties: how many events of each key had
each value of the property in each hour (`property_counts`), so a breakdown or a filtered
daily chart over a year sums thousands of rows instead of walking one value per event.

The counts are exactly those of the property's stored values (`property_values`) grouped by
hour, key, kind and value: the writer adds a batch's counts in the insert's transaction, the
backfill adds those of each chunk's events that had no value yet, and a deletion (erasure,
retention) takes away the counts of the values it deletes. Reads use them only for a property
that is `complete` and still `counted`.

Low cardinality is decided per property as the values arrive: its distinct (kind, value) pairs
are listed in `property_count_values`; once they pass `MAX_COUNTED_VALUES` the property is no
longer counted (its counts deleted, `counted` cleared for good) and every read of it takes the
per-event path, which is as exact. A property of many values (an id, an amount in cents) would
have about one count per event: nothing to gain, and a second b-tree to write.

The bucket is an hour (UTC): a daily or hourly chart in every time zone whose offset is whole
hours is a union of whole hours; the rollups' 15 minutes (which divide every offset in use)
would keep four times the rows; the edges of a range that cut an hour are read per event.

Beside them, `property_counts_all_keys` holds the same counts summed over the keys, (property,
hour, kind, value) -> count, kept by the same statements in the same transactions (as the
sketches keep `sketch_15m_all_keys`): a question that names no key (a breakdown, a filtered
chart of every key) sums 50 rows an hour instead of one per key and value. A row is there
exactly while its sum over the keys is above 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import apsw

from tlytics.chunks import chunks

HOUR_US = 3_600_000_000


def hour_sql(column: str) -> str:
    """SQL for the hour of timestamp `column`: floor division for negative timestamps too
    (SQLite's / truncates toward zero)."""
    return f"({column} / {HOUR_US} - ({column} < 0 AND {column} % {HOUR_US} != 0))"


# Past this many distinct values a property is no longer counted (read per event instead).
MAX_COUNTED_VALUES = 200
NULL_KIND = 5  # tlytics.store.sqlite.properties.NULL: json_extract gives NULL, counted as ''
# A batch's counts, before they are added to (or taken from) property_counts. A primary key
# column cannot be NULL in a WITHOUT ROWID table: a JSON null is counted with the value ''.
_BATCH_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS batch_counts (hour INTEGER NOT NULL, key TEXT NOT NULL,"
    " kind INTEGER NOT NULL, value NOT NULL, count INTEGER NOT NULL)"
)
# The counts of the values of property ?1 a backfill's chunk is about to store
# (tlytics.store.sqlite.property_backfill), but for those the inserts stored meanwhile (counted then).
_COUNT_BACKFILL = (
    f"INSERT INTO temp.batch_counts SELECT {hour_sql('b.ts')}, b.key, b.kind, coalesce(b.value, ''), count(*)"
    " FROM temp.backfill_values b WHERE b.property = ?1 AND NOT EXISTS"
    " (SELECT 1 FROM property_values pv WHERE pv.property = ?1 AND pv.ts = b.ts AND pv.id = b.id)"
    " GROUP BY 1, 2, 3, 4"
)
# The insert's side: the counts of property ?1 among a batch's new values, extracted once for
# every declared property into temp.new_values (tlytics.store.sqlite.properties), from which
# the values are stored too (a second JSON pass over the batch cost about 5 µs per event,
# twice what the temporary table costs).
_COUNT_NEW = (
    f"INSERT INTO temp.batch_counts SELECT {hour_sql('ts')}, key, kind, coalesce(value, ''), count(*)"
    " FROM temp.new_values WHERE property = ?1 GROUP BY 1, 2, 3, 4"
)
_ADD_BATCH = (
    "INSERT INTO property_counts (property, hour, key, kind, value, count)"
    " SELECT ?, hour, key, kind, value, count FROM temp.batch_counts WHERE true"
    " ON CONFLICT DO UPDATE SET count = count + excluded.count"
)
# The same batch summed over its keys, into the all-keys twin.
_ADD_BATCH_ALL_KEYS = (
    "INSERT INTO property_counts_all_keys (property, hour, kind, value, count)"
    " SELECT ?, hour, kind, value, sum(count) FROM temp.batch_counts WHERE true GROUP BY hour, kind, value"
    " ON CONFLICT DO UPDATE SET count = count + excluded.count"
)
_LIST_VALUES = (
    "INSERT OR IGNORE INTO property_count_values (property, kind, value) SELECT DISTINCT ?, kind, value"
    " FROM temp.batch_counts"
)
_SUBTRACT_BATCH = (
    "UPDATE property_counts SET count = property_counts.count - b.count FROM temp.batch_counts b"
    " WHERE property_counts.property = ? AND property_counts.hour = b.hour AND property_counts.key = b.key"
    " AND property_counts.kind = b.kind AND property_counts.value = b.value"
)
_DROP_EMPTY = (
    "DELETE FROM property_counts WHERE property = ?1 AND count <= 0"
    " AND (hour, key, kind, value) IN (SELECT hour, key, kind, value FROM temp.batch_counts)"
)

_SUBTRACT_BATCH_ALL_KEYS = (
    "UPDATE property_counts_all_keys SET count = property_counts_all_keys.count - b.count"
    " FROM (SELECT hour, kind, value, sum(count) AS count FROM temp.batch_counts GROUP BY hour, kind, value) b"
    " WHERE property_counts_all_keys.property = ? AND property_counts_all_keys.hour = b.hour"
    " AND property_counts_all_keys.kind = b.kind AND property_counts_all_keys.value = b.value"
)
_DROP_EMPTY_ALL_KEYS = (
    "DELETE FROM property_counts_all_keys WHERE property = ?1 AND count <= 0"
    " AND (hour, kind, value) IN (SELECT hour, kind, value FROM temp.batch_counts)"
)


def prepare(connection: apsw.Connection) -> None:
    """The temporary table the counting uses, on the write connection."""
    connection.execute(_BATCH_TABLE)


def counted_numbers(connection: apsw.Connection) -> list[int]:
    """The declared properties (numbers) whose counts are kept."""
    return [cast(int, n) for (n,) in connection.execute("SELECT number FROM declared_properties WHERE counted")]


def add_new_counts(connection: apsw.Connection, number: int) -> bool:
    """Count the values of counted property `number` of the insert's new events (in
    temp.new_values); False once the property has too many values to be counted."""
    connection.execute("DELETE FROM temp.batch_counts")
    connection.execute(_COUNT_NEW, (number,))
    return _add_batch(connection, number)


def add_backfill_counts(connection: apsw.Connection, number: int) -> bool:
    """Count the values of property `number` a backfill's chunk is about to store (those in
    temp.backfill_values not stored yet); False once the property has too many values to be counted."""
    connection.execute("DELETE FROM temp.batch_counts")
    connection.execute(_COUNT_BACKFILL, (number,))
    return _add_batch(connection, number)


def _add_batch(connection: apsw.Connection, number: int) -> bool:
    """Add temp.batch_counts to property `number`'s counts; stop counting it (False) once it
    has too many distinct values."""
    connection.execute(_ADD_BATCH, (number,))
    connection.execute(_ADD_BATCH_ALL_KEYS, (number,))
    before = connection.total_changes()
    connection.execute(_LIST_VALUES, (number,))
    if connection.total_changes() == before:
        return True  # no value new to the property
    listed = connection.execute("SELECT count(*) FROM property_count_values WHERE property = ?", (number,)).get
    if cast(int, listed) > MAX_COUNTED_VALUES:
        stop_counting(connection, number)
        return False
    return True


def stop_counting(connection: apsw.Connection, number: int) -> None:
    """Property `number` is no longer counted: its reads take the per-event path, for good."""
    forget_counts(connection, number)
    connection.execute("UPDATE declared_properties SET counted = 0 WHERE number = ?", (number,))


def forget_counts(connection: apsw.Connection, number: int) -> None:
    connection.execute("DELETE FROM property_counts WHERE property = ?", (number,))
    connection.execute("DELETE FROM property_counts_all_keys WHERE property = ?", (number,))
    connection.execute("DELETE FROM property_count_values WHERE property = ?", (number,))


def subtract_counts(connection: apsw.Connection, number: int, ids: Sequence[bytes]) -> None:
    """Take the counts of the stored values of property `number` of the events `ids`, about to
    be deleted with their values, away (inside the deletion's transaction)."""
    for chunk in chunks(ids):
        marks = ",".join("?" * len(chunk))
        connection.execute("DELETE FROM temp.batch_counts")
        connection.execute(
            f"INSERT INTO temp.batch_counts SELECT {hour_sql('e.ts')}, e.key, pv.kind,"
            " coalesce(pv.value, ''), count(*) FROM events e JOIN property_values pv ON pv.property = ?"
            f" AND pv.ts = e.ts AND pv.id = e.id WHERE e.id IN ({marks}) GROUP BY 1, 2, 3, 4",
            (number, *chunk),
        )
        connection.execute(_SUBTRACT_BATCH, (number,))
        connection.execute(_DROP_EMPTY, (number,))
        connection.execute(_SUBTRACT_BATCH_ALL_KEYS, (number,))
        connection.execute(_DROP_EMPTY_ALL_KEYS, (number,))


def count_stored_values(connection: apsw.Connection) -> None:
    """The migration that adds the counts (9): every declared property's counts from its stored
    values (a backfill under way goes on counting from where it is), or none when it has too
    many distinct values. Not the all-keys twin: migration 10 adds it, summing these."""
    prepare(connection)
    for (number,) in connection.execute("SELECT number FROM declared_properties").fetchall():
        distinct = connection.execute(
            "SELECT count(*) FROM (SELECT DISTINCT kind, coalesce(value, '') FROM property_values WHERE property = ?)",
            (number,),
        ).get
        if cast(int, distinct) > MAX_COUNTED_VALUES:
            connection.execute("UPDATE declared_properties SET counted = 0 WHERE number = ?", (number,))
            continue
        connection.execute("DELETE FROM temp.batch_counts")
        connection.execute(
            f"INSERT INTO temp.batch_counts SELECT {hour_sql('e.ts')}, e.key, pv.kind,"
            " coalesce(pv.value, ''), count(*) FROM property_values pv JOIN events e ON e.ts = pv.ts AND e.id = pv.id"
            " WHERE pv.property = ? GROUP BY 1, 2, 3, 4",
            (number,),
        )
        connection.execute(_ADD_BATCH, (number,))
        connection.execute(_LIST_VALUES, (number,))


# Migration 10: the all-keys twin of property_counts, summed from it (no backfill needed).
ALL_KEYS_MIGRATION = """
CREATE TABLE property_counts_all_keys (property INTEGER NOT NULL, hour INTEGER NOT NULL, kind INTEGER NOT NULL,
    value NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (property, hour, kind, value)) WITHOUT ROWID;
CREATE INDEX property_counts_all_keys_by_value ON property_counts_all_keys (property, kind, value, hour);
INSERT INTO property_counts_all_keys (property, hour, kind, value, count)
    SELECT property, hour, kind, value, sum(count) FROM property_counts
    GROUP BY property, hour, kind, value HAVING sum(count) > 0;
"""
