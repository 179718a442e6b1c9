"""What each b-tree costs the writer: the same rows inserted (in the writer's 20k-row
transactions, `ON CONFLICT (id) DO NOTHING`) into the events table as it is and into the
layouts issue 13 suggests, on a fresh file with synchronous=NORMAL in WAL mode, like the store.

    python -m bench.insert_btrees            # 400k rows per layout, best of 3
    python -m bench.insert_btrees --rows 100000 --rounds 1

Prints rows/s per layout and writes bench/results/insert-btrees-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import apsw

from tlytics.ids import uuid7_block

RESULTS = Path(__file__).with_name("results")
BATCH = 20_000
LAYOUTS = {
    # Schema 7's: rowid table + unique index on id + (ts, id) index.
    "rowid + unique(id) + index(ts, id) [schema 7]": """
        CREATE TABLE events (seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, key TEXT NOT NULL,
            ts INTEGER NOT NULL, received_at INTEGER NOT NULL, data TEXT NOT NULL);
        CREATE INDEX events_by_time ON events (ts, id);""",
    # Clustered by (ts, id): the table is the time index, plus the unique index on id (schema 8's).
    "WITHOUT ROWID clustered (ts, id) + unique(id) [current]": """
        CREATE TABLE events (ts INTEGER NOT NULL, id BLOB NOT NULL UNIQUE, key TEXT NOT NULL,
            received_at INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (ts, id)) WITHOUT ROWID;""",
    # What two b-trees would cost at best: the time index dropped (reads would need another way).
    "rowid + unique(id) only (lower bound for 2 b-trees)": """
        CREATE TABLE events (seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, key TEXT NOT NULL,
            ts INTEGER NOT NULL, received_at INTEGER NOT NULL, data TEXT NOT NULL);""",
}
INSERT = "INSERT INTO events (id, key, ts, received_at, data) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"


def make_rows(count: int) -> list[tuple[bytes, str, int, int, str]]:
    """Rows like the benchmark's: time-ordered ids, a few keys, ~90 bytes of data each."""
    now_us = time.time_ns() // 1000
    rows = []
    for start in range(0, count, 100):
        first = uuid7_block(100)
        for i in range(min(100, count - start)):
            n = start + i
            data = f'{{"user_id":"u{n % 1000}","path":"/products/{n}","referrer":"https://example.com/","n":{n}}}'
            rows.append(((first + i).to_bytes(16, "big"), f"key_{n % 20}", now_us + n // 100, now_us, data))
    return rows


def insert_all(schema: str, rows: list[tuple[bytes, str, int, int, str]]) -> float:
    """Seconds to insert `rows` in BATCH-row transactions into a fresh store file."""
    with tempfile.TemporaryDirectory(prefix="tlytics-btrees-") as directory:
        connection = apsw.Connection(os.path.join(directory, "events.db"))
        connection.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        connection.execute(schema)
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            with connection:
                connection.executemany(INSERT, rows[start : start + BATCH])
        elapsed = time.perf_counter() - started
        connection.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs per layout")
    args = parser.parse_args()
    rows = make_rows(args.rows)
    results: dict[str, float] = {}
    for name, schema in LAYOUTS.items():
        best = min(insert_all(schema, rows) for _ in range(args.rounds))
        results[name] = args.rows / best
        print(f"{name:<55} {results[name]:>10,.0f} rows/s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"insert-btrees-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"rows": args.rows, "rounds": args.rounds, "rows_per_s": results}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
