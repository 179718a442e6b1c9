"""A one-second run of the ingest benchmark's code: the real server and the ceiling under wrk,
the table and the JSON it writes. No thresholds: figures on a shared machine are not facts."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from bench.ingest import bench_ceiling, bench_tlytics, format_table, table_rows

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")


def test_a_short_run_prints_the_table_and_its_figures_add_up(tmp_path: Path) -> None:
    args = argparse.Namespace(connections=4, threads=1, flush="200ms", log_level="info")
    ceiling = bench_ceiling(1, 1, args)
    ours = bench_tlytics(1, 1, args)
    results = {
        "events_1": {
            "ceiling": ceiling,
            "tlytics": ours,
            "ratio_acknowledged_events": ours["acknowledged_events_per_s"] / ceiling["events_per_s"],
            "ratio_stored_events": ours["stored_events_per_s_end_to_end"] / ceiling["events_per_s"],
        }
    }
    # Every acknowledged event was stored once: what the server counted, wrk saw and the store holds.
    assert ours["stored_equals_acknowledged"] and ours["non_200"] == 0
    assert ours["acknowledged_events_server"] >= ours["acknowledged_events_wrk"] > 0
    table = format_table(table_rows(results))
    header, rule, *rows = table.splitlines()
    assert header.split()[:2] == ["configuration", "figure"] and set(rule) <= {"-", " "}
    assert rows[0].startswith("1 ev/req: acknowledged") and "req/s" in rows[0]
    out = tmp_path / "run.json"
    out.write_text(json.dumps(results))
    assert json.loads(out.read_text())["events_1"]["tlytics"]["log_level"] == "info"
