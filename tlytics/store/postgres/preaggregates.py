"""Pre-aggregates of declared low-cardinality properties on PostgreSQL: how many events of
each key had each value of the property in each hour (`property_counts`), so a breakdown or a
filtered daily chart over a year sums thousands of rows instead of reading one value per event
(the SQLite store's tlytics.store.sqlite.preaggregates, for several nodes).

The counts are exactly those of the property's stored values (`property_values`) grouped by
hour, key, kind and value. They are kept in the same statements that store or delete the
values: an insert counts the values it stores, the backfill counts the values its chunk stores
(ON CONFLICT DO NOTHING ... RETURNING: exactly the events that had none), a deletion takes away
the counts of the values it deletes (tlytics.store.postgres.writes), and retention's dropped
partition takes its whole hours of counts with it (partition_retention). Reads use them only
for a property that is `complete` and still `counted`.

Each node adds to rows of its own (`node` in the key, as the rollups do): nodes inserting at
once never update the same row, so no update is lost, none waits for another's commit, and no
two nodes can deadlock on the counts. A deletion (which runs beside other nodes' inserts under
the shared erasure lock) subtracts in its own node's rows too, which may go negative; the sums
stay exact and the reads sum every node's rows. The backfill and the migration write as node ''
under the exclusive erasure lock.

Low cardinality is decided per property as values arrive: its distinct (kind, value) pairs are
listed in `property_count_values` (shared by the nodes, inserted in (kind, value) order so two
nodes adding the same new values wait for each other in one order, never in a cycle); once they
pass MAX_COUNTED_VALUES, or a value longer than INDEXED_CHARS arrives (the key of a count must
fit a b-tree entry), the property is no longer counted, for good. A node that read `counted`
before another cleared it may still add rows in that transaction: they are never read (reads
check `counted` first) and the next declaration (exclusive lock) deletes them.

Beside them, `property_counts_all_keys` holds the same counts summed over the keys (property,
hour, node, kind, val), written by the same statements (as `sketch_15m_all_keys` beside
`sketch_15m`): a question that names no key sums one row per hour, node and value instead of
one per key too. Its rows are each node's sums, which may go negative as the keys' rows may.
"""

from __future__ import annotations

from typing import cast

from tlytics.store.postgres.filters import INDEXED_CHARS, property_value
from tlytics.store.postgres.partitions import Cursor

HOUR_US = 3_600_000_000


def hour_sql(column: str) -> str:
    """SQL for the hour (UTC) of timestamp `column`: floor division for negative timestamps
    too (PostgreSQL's integer division truncates toward zero)."""
    return f"({column} / 3600000000 - ({column} < 0 AND mod({column}, 3600000000) <> 0)::int)"


# Past this many distinct values a property is no longer counted (read per event instead).
MAX_COUNTED_VALUES = 200

# Migration 8 (its tables; count_stored_values then fills them).
MIGRATION = """
ALTER TABLE declared_properties ADD COLUMN counted boolean NOT NULL DEFAULT true;
CREATE TABLE property_counts (
    property integer NOT NULL,
    hour bigint NOT NULL,
    key text COLLATE "C" NOT NULL,
    node text COLLATE "C" NOT NULL,
    kind smallint NOT NULL,
    val text COLLATE "C" NOT NULL,
    num numeric,
    count bigint NOT NULL,
    PRIMARY KEY (property, hour, key, node, kind, val)
);
CREATE INDEX property_counts_by_value ON property_counts (property, kind, val, hour);
-- A key's counts alone (key=): without it a breakdown of one key read every key's counts.
CREATE INDEX property_counts_by_key ON property_counts (property, key, hour);
CREATE TABLE property_count_values (
    property integer NOT NULL,
    kind smallint NOT NULL,
    val text COLLATE "C" NOT NULL,
    num numeric,
    PRIMARY KEY (property, kind, val)
);
"""

# The values of property %(number)s of `rows` (a query with ts, id, key, data), typed, stored
# where missing, and (those stored now) counted in node %(node)s's rows and listed; answers
# how many values are new to the list and whether one is too long to be counted.
_STORE_AND_COUNT = """
WITH typed (ts, id, key, kind, num, val) AS MATERIALIZED (
    SELECT ts, id, key, {typed} FROM (SELECT ts, id, key, {value} AS v FROM ({rows}) r OFFSET 0) x
    WHERE v IS NOT NULL
), added AS (
    INSERT INTO property_values (property, ts, id, kind, num, val)
    SELECT %(number)s, ts, id, kind, num, val FROM typed ON CONFLICT DO NOTHING RETURNING ts, id
), per_hour AS (
    SELECT {hour} AS hour, t.key, t.kind, t.val, min(t.num) AS num, count(*) AS n
    FROM typed t JOIN added a ON a.ts = t.ts AND a.id = t.id
    WHERE length(t.val) <= {indexed} GROUP BY 1, 2, 3, 4
), counted AS (
    INSERT INTO property_counts (property, hour, key, node, kind, val, num, count)
    SELECT %(number)s, hour, key, %(node)s, kind, val, num, n FROM per_hour ORDER BY hour, key, kind, val
    ON CONFLICT (property, hour, key, node, kind, val) DO UPDATE SET count = property_counts.count + excluded.count
), counted_all_keys AS (
    INSERT INTO property_counts_all_keys (property, hour, node, kind, val, num, count)
    SELECT %(number)s, hour, %(node)s, kind, val, min(num), sum(n) FROM per_hour
    GROUP BY hour, kind, val ORDER BY hour, kind, val
    ON CONFLICT (property, hour, node, kind, val) DO UPDATE SET count = property_counts_all_keys.count + excluded.count
), listed AS (
    INSERT INTO property_count_values (property, kind, val, num)
    SELECT %(number)s, kind, val, min(num) FROM per_hour GROUP BY kind, val ORDER BY kind, val
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT (SELECT count(*) FROM listed),
    EXISTS (SELECT 1 FROM typed t JOIN added a ON a.ts = t.ts AND a.id = t.id WHERE length(t.val) > {indexed})
"""


def store_and_count(
    cursor: Cursor, number: int, path: str, typed: str, rows: str, rows_params: dict[str, object], node: str
) -> None:
    """Store property `number` (at `path`) of the events `rows` selects where it has no value
    yet (`typed`: the SQL of the kind, num and val of a JSON value `v`), and count what was
    stored in `node`'s rows; stop counting the property once it has too many values or too
    long a one."""
    value, value_params = property_value(path)
    # property_value's parameters are positional: named here, the rest named too.
    named_value = value
    params: dict[str, object] = {"number": number, "node": node, **rows_params}
    for index, param in enumerate(value_params):
        named_value = named_value.replace("%s", f"%(value{index})s", 1)
        params[f"value{index}"] = param
    query = _STORE_AND_COUNT.format(
        typed=typed, value=named_value, rows=rows, hour=hour_sql("t.ts"), indexed=INDEXED_CHARS
    )
    new_values, too_long = cursor.execute(query, params).fetchone() or (0, False)
    if too_long:
        stop_counting(cursor, number, node)
    elif new_values:
        listed = cursor.execute("SELECT count(*) FROM property_count_values WHERE property = %s", (number,)).fetchone()
        if listed is not None and cast(int, listed[0]) > MAX_COUNTED_VALUES:
            stop_counting(cursor, number, node)


def stop_counting(cursor: Cursor, number: int, node: str) -> None:
    """Property `number` is no longer counted: its reads take the per-event path, for good.
    The flag first: a second node stopping it waits here, holding no count of its own yet
    that the first could need. Other nodes' rows go at the next declaration."""
    cursor.execute("UPDATE declared_properties SET counted = false WHERE number = %s", (number,))
    for table in ("property_counts", "property_counts_all_keys"):
        cursor.execute(f"DELETE FROM {table} WHERE property = %s AND node = %s", (number, node))


def forget_stale_counts(cursor: Cursor, forgotten: int | None = None) -> None:
    """The counts no read uses: of the properties no longer counted, or of property
    `forgotten` (under the exclusive erasure lock: no insert adds to them meanwhile)."""
    stale = "SELECT number FROM declared_properties WHERE NOT counted UNION ALL SELECT %s"
    for table in ("property_counts", "property_counts_all_keys", "property_count_values"):
        cursor.execute(f"DELETE FROM {table} WHERE property = ANY(ARRAY({stale}))", (forgotten,))


# The counts a deletion takes away: a CTE of writes._DELETE, after `unvalued` (the deleted
# values, returned) and `gone` (the deleted events); its two parameters are the node.
UNCOUNTED_CTE = f"""
, uncounted AS (
    INSERT INTO property_counts (property, hour, key, node, kind, val, num, count)
    SELECT u.property, {hour_sql("u.ts")}, g.key, %s, u.kind, u.val, min(u.num), -count(*)
    FROM unvalued u JOIN gone g ON g.ts = u.ts AND g.id = u.id
    WHERE u.property IN (SELECT number FROM declared_properties WHERE counted) AND length(u.val) <= {INDEXED_CHARS}
    GROUP BY 1, 2, 3, 5, 6 ORDER BY 1, 2, 3, 5, 6
    ON CONFLICT (property, hour, key, node, kind, val) DO UPDATE SET count = property_counts.count + excluded.count
), uncounted_all_keys AS (
    INSERT INTO property_counts_all_keys (property, hour, node, kind, val, num, count)
    SELECT u.property, {hour_sql("u.ts")}, %s, u.kind, u.val, min(u.num), -count(*)
    FROM unvalued u JOIN gone g ON g.ts = u.ts AND g.id = u.id
    WHERE u.property IN (SELECT number FROM declared_properties WHERE counted) AND length(u.val) <= {INDEXED_CHARS}
    GROUP BY 1, 2, 4, 5 ORDER BY 1, 2, 4, 5
    ON CONFLICT (property, hour, node, kind, val) DO UPDATE SET count = property_counts_all_keys.count + excluded.count
)"""


def drop_hours(cursor: Cursor, low_us: int, high_us: int) -> None:
    """Retention dropped the events of [low_us, high_us), whole hours: their counts go too."""
    for table in ("property_counts", "property_counts_all_keys"):
        cursor.execute(
            f"DELETE FROM {table} WHERE property = ANY(ARRAY(SELECT number FROM declared_properties))"
            " AND hour >= %s AND hour < %s",
            (low_us // HOUR_US, high_us // HOUR_US),
        )


def count_stored_values(cursor: Cursor) -> None:
    """Part of migration 8: every declared property's counts from its stored values (node
    ''), or none when it has too many distinct values or too long a one. Not the all-keys
    twin: migration 9 adds it, summing these."""
    for (number,) in cursor.execute("SELECT number FROM declared_properties ORDER BY number").fetchall():
        row = cursor.execute(
            "SELECT count(*), coalesce(max(length(val)), 0) FROM"
            " (SELECT DISTINCT kind, val FROM property_values WHERE property = %s) v",
            (number,),
        ).fetchone()
        assert row is not None  # an aggregate always answers one row
        if cast(int, row[0]) > MAX_COUNTED_VALUES or cast(int, row[1]) > INDEXED_CHARS:
            cursor.execute("UPDATE declared_properties SET counted = false WHERE number = %s", (number,))
            continue
        cursor.execute(
            f"INSERT INTO property_counts (property, hour, key, node, kind, val, num, count)"
            f" SELECT %s, {hour_sql('pv.ts')}, e.key, '', pv.kind, pv.val, min(pv.num), count(*)"
            " FROM property_values pv JOIN events e ON e.ts = pv.ts AND e.id = pv.id WHERE pv.property = %s"
            " GROUP BY 2, 3, 5, 6",
            (number, number),
        )
        cursor.execute(
            "INSERT INTO property_count_values (property, kind, val, num)"
            " SELECT %s, kind, val, min(num) FROM property_values WHERE property = %s GROUP BY kind, val",
            (number, number),
        )


# Migration 9: the all-keys twin of property_counts, summed from it per node (no backfill).
ALL_KEYS_MIGRATION = """
CREATE TABLE property_counts_all_keys (
    property integer NOT NULL,
    hour bigint NOT NULL,
    node text COLLATE "C" NOT NULL,
    kind smallint NOT NULL,
    val text COLLATE "C" NOT NULL,
    num numeric,
    count bigint NOT NULL,
    PRIMARY KEY (property, hour, node, kind, val)
);
CREATE INDEX property_counts_all_keys_by_value ON property_counts_all_keys (property, kind, val, hour);
INSERT INTO property_counts_all_keys (property, hour, node, kind, val, num, count)
    SELECT property, hour, node, kind, val, min(num), sum(count) FROM property_counts
    GROUP BY property, hour, node, kind, val;
"""
