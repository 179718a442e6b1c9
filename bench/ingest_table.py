"""The table `python -m bench.ingest` prints: each figure beside the ceiling of the same round
and the ratio the issue's target is about; with `--old`, each side's figures and new ÷ old."""

from __future__ import annotations

from collections.abc import Callable
from statistics import median
from typing import Any

Row = tuple[str, str, str, str, str]


def _per_event_rows(run: dict[str, Any]) -> list[Row]:
    ours, ceiling = run["tlytics"], run["ceiling"]
    rows: list[Row] = [
        (
            f"100 ev/req, {ours['wrk']['duration_us'] / 1e6:.0f} s: acknowledged",
            f"{ours['acknowledged_events_per_s']:,.0f} ev/s",
            f"{ceiling['events_per_s']:,.0f} ev/s",
            f"{run['ratio_acknowledged_events']:.2f}",
            "",
        ),
        (
            "  stored end to end",
            f"{ours['stored_events_per_s_end_to_end']:,.0f} ev/s",
            "",
            f"{run['ratio_stored_events']:.2f}",
            ">= 0.32",
        ),
    ]
    if "cpu_us_per_stored_event" in ours and "cpu_us_per_event" in ceiling:
        rows.append(
            (
                "  CPU per stored event (server+writer)",
                f"{ours['cpu_us_per_stored_event']:.2f} us ({ours['cpu_ingest_s'] / ours['cpu_s']:.0%} ingest)",
                f"{ceiling['cpu_us_per_event']:.2f} us",
                f"{ours['cpu_us_per_stored_event'] / ceiling['cpu_us_per_event']:.2f}"
                if ceiling["cpu_us_per_event"]
                else "",
                "",
            )
        )
    rows += [
        ("  backlog at load end", f"{ours['backlog_at_load_end_s']:.1f} s of intake", "", "", "< 5 s"),
        ("  drained after the load", f"{ours['drain_after_load_s']:.1f} s", "", "", "<= 5 s"),
        ("  p50 / p99", f"{ours['p50_ms']:.1f} / {ours['p99_ms']:.1f} ms", "", "", "p99 <= 50 ms"),
        ("  peak RSS server + writer", f"{ours['peak_rss_total_mb']:.0f} MB", "", "", "<= 300 MB"),
        ("  stored == acknowledged", str(ours["stored_equals_acknowledged"]), "", "", "True"),
    ]
    return rows


def _per_request_rows(run: dict[str, Any]) -> list[Row]:
    ours, ceiling = run["tlytics"], run["ceiling"]
    rows: list[Row] = [
        (
            "1 ev/req: acknowledged",
            f"{ours['acknowledged_requests_per_s']:,.0f} req/s",
            f"{ceiling['requests_per_s']:,.0f} req/s",
            f"{run['ratio_acknowledged_events']:.2f}",
            ">= 0.6",
        ),
        ("  p99", f"{ours['p99_ms']:.1f} ms", "", "", "<= 50 ms"),
    ]
    if "server_cpu_us_per_request" in ours and "cpu_us_per_request" in ceiling:
        rows += [
            (
                "  server CPU per request",
                f"{ours['server_cpu_us_per_request']:.0f} us",
                f"{ceiling['cpu_us_per_request']:.0f} us",
                f"{ours['server_cpu_us_per_request'] / ceiling['cpu_us_per_request']:.2f}"
                if ceiling["cpu_us_per_request"]
                else "",
                "<= 1.6",
            ),
            ("  writer CPU per spool entry", f"{ours['writer_cpu_us_per_spool_entry']:.0f} us", "", "", "small"),
            ("  stored == acknowledged", str(ours["stored_equals_acknowledged"]), "", "", "True"),
        ]
    return rows


def _uvloop_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for n, unit in ((100, "events_per_s"), (1, "requests_per_s")):
        ceiling = results.get(f"events_{n}", {}).get("ceiling_uvloop")
        if ceiling is not None:
            rows.append(
                (
                    f"ceiling on uvloop, {n} ev/req",
                    f"{ceiling[unit]:,.0f} {'ev/s' if n == 100 else 'req/s'}, {ceiling['cpu_us_per_request']:.0f} us/req",
                    "",
                    f"{ceiling[unit] / results[f'events_{n}']['ceiling'][unit]:.2f} x asyncio's",
                    "",
                )
            )
    return rows


def _extra_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "events_1_log_off" in results:
        run = results["events_1_log_off"]
        ours = run["tlytics"]
        rows.append(
            (
                "1 ev/req, log line off",
                f"{ours['acknowledged_requests_per_s']:,.0f} req/s, {ours['cpu_us_per_request']:.0f} us",
                "",
                f"on/off {run['ratio_log_on_to_off_requests']:.2f} req/s,"
                f" {run['ratio_log_on_to_off_cpu_per_request']:.2f} CPU",
                "req/s >= 0.9",
            )
        )
    if "spool_sync_full" in results:
        run = results["spool_sync_full"]
        rows.append(
            (
                "100 ev/req, --spool-sync full",
                f"{run['tlytics']['acknowledged_events_per_s']:,.0f} ev/s",
                "",
                f"{run['ratio_to_normal_acknowledged']:.2f} x normal",
                ">= 0.7",
            )
        )
    for nodes in (1, 2):
        run = results.get(f"postgresql_{nodes}_nodes")
        if run is not None:
            rows.append(
                (
                    f"PostgreSQL, {nodes} node{'s' if nodes > 1 else ''}: stored",
                    f"{run['stored_events_per_s_end_to_end']:,.0f} ev/s",
                    "",
                    f"{run['ratio_to_sqlite_stored']:.2f} x SQLite",
                    ">= 0.5" if nodes == 1 else "",
                )
            )
    if "client" in results:
        client = results["client"]
        rows += [
            ("client emit() p50 / p99", f"{client['emit_p50_us']:.2f} / {client['emit_p99_us']:.2f} us", "", "", ""),
            (
                "client emits/s, delivery",
                f"{client['emits_per_s']:,.0f} / {client['delivery_events_per_s']:,.0f} ev/s",
                "",
                "",
                "",
            ),
        ]
    return rows


def table_rows(results: dict[str, Any]) -> list[Row]:
    """(configuration, figure, ceiling in the same round, ratio, target) for every run made."""
    rows: list[Row] = []
    if "events_100" in results:
        rows += _per_event_rows(results["events_100"])
    if "events_1" in results:
        rows += _per_request_rows(results["events_1"])
    return rows + _uvloop_rows(results) + _extra_rows(results)


# (events per request, name, figure of a compared run, unit) for the old/new summary.
_COMPARED_FIGURES: tuple[tuple[int, str, Callable[[dict[str, Any]], float], str], ...] = (
    (100, "CPU per stored event", lambda run: run["tlytics"]["cpu_us_per_stored_event"], "us"),
    (100, "  ÷ ceiling's", lambda run: run["ratio_cpu_per_event"], ""),
    (100, "stored ev/s ÷ ceiling", lambda run: run["ratio_stored_events"], ""),
    (100, "acknowledged ev/s ÷ ceiling", lambda run: run["ratio_acknowledged_events"], ""),
    (100, "p99 ms", lambda run: run["tlytics"]["p99_ms"], ""),
    (1, "server CPU per request", lambda run: run["tlytics"]["server_cpu_us_per_request"], "us"),
    (1, "  ÷ ceiling's", lambda run: run["ratio_server_cpu_per_request"], ""),
    (1, "writer CPU per spool entry", lambda run: run["tlytics"]["writer_cpu_us_per_spool_entry"], "us"),
    (1, "req/s ÷ ceiling", lambda run: run["ratio_acknowledged_events"], ""),
)


def comparison_rows(comparison: dict[str, Any]) -> list[Row]:
    """With an old checkout: each figure's median over the rounds for old and new, and the
    median of the rounds' new ÷ old (each round's pair ran back to back)."""
    rounds = comparison["rounds"]
    rows: list[Row] = []
    for n, name, figure, unit in _COMPARED_FIGURES:
        old = [figure(r[f"old_{n}"]) for r in rounds]
        new = [figure(r[f"new_{n}"]) for r in rounds]
        ratios = [b / a for a, b in zip(old, new, strict=True) if a]
        rows.append(
            (
                f"{n} ev/req: {name.strip()}" if not name.startswith(" ") else name,
                f"{median(old):.2f}{unit}",
                f"{median(new):.2f}{unit}",
                f"{median(ratios):.2f}" if ratios else "",
                " ".join(f"{ratio:.2f}" for ratio in ratios),
            )
        )
    return rows


def format_table(
    rows: list[Row], header: Row = ("configuration", "figure", "ceiling, same run", "ratio", "target")
) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


COMPARISON_HEADER: Row = ("figure (median of rounds)", "old", "new", "new ÷ old", "each round")
