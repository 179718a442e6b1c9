"""The `tlytics` command line: flags, TLYTICS_* variables (the flag wins), durations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import http_json
from tlytics.cli import parse_settings
from tlytics.timefmt import format_rfc3339_us, parse_duration_s, parse_rfc3339_us


def test_defaults_match_the_design() -> None:
    settings, log_level = parse_settings([], {})
    assert (settings.host, settings.port) == ("0.0.0.0", 8081)
    assert settings.db_path == Path("analytics.db")
    assert settings.resolved_spool_dir == Path("analytics.db.spool")
    assert settings.spool_sync == "normal"
    assert settings.flush_period_s == 5.0
    assert log_level == "info"


def test_environment_sets_and_flags_win() -> None:
    environ = {
        "TLYTICS_HOST": "127.0.0.1",
        "TLYTICS_PORT": "9000",
        "TLYTICS_DB": "/data/a.sqlite",
        "TLYTICS_SPOOL": "/spool",
        "TLYTICS_SPOOL_SYNC": "full",
        "TLYTICS_FLUSH": "500ms",
    }
    settings, _ = parse_settings([], environ)
    assert settings.host == "127.0.0.1" and settings.port == 9000
    assert settings.db_path == Path("/data/a.sqlite")
    assert settings.resolved_spool_dir == Path("/spool")
    assert settings.spool_sync == "full"
    assert settings.flush_period_s == 0.5
    flagged, _ = parse_settings(["--port", "8080", "--flush", "10s", "--db", "/x.db"], environ)
    assert flagged.port == 8080 and flagged.flush_period_s == 10.0
    assert flagged.db_path == Path("/x.db")
    assert flagged.resolved_spool_dir == Path("/spool")  # still from the environment


def test_default_spool_follows_db() -> None:
    settings, _ = parse_settings(["--db", "/data/analytics.sqlite"], {})
    assert settings.resolved_spool_dir == Path("/data/analytics.sqlite.spool")


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ([], {"TLYTICS_PORT": "eighty"}, "TLYTICS_PORT"),
        ([], {"TLYTICS_FLUSH": "5 minutes"}, "TLYTICS_FLUSH"),
        (["--port", "70000"], {}, "--port"),
        (["--flush=-1s"], {}, "--flush"),
        (["--port", "http"], {}, "not a port number"),
        (["--spool-sync", "sometimes"], {}, "--spool-sync"),
    ],
)
def test_bad_values_exit_with_a_clear_message(
    argv: list[str], environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_settings(argv, environ)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("1m", 60.0), ("1m30s", 90.0), ("2h", 7200.0), ("2.5", 2.5), ("0", 0.0), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 s", "s", "5x", "1m30", "nan", "inf", "-3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("2025-08-25T10:00:00.123456789Z", 1756116000123456),
        ("2025-08-25t10:00:00.5z", 1756116000500000),
        ("1969-12-31T23:59:59Z", -1_000_000),
    ],
)
def test_rfc3339_round_trip(text: str, micros: int) -> None:
    assert parse_rfc3339_us(text) == micros
    assert parse_rfc3339_us(format_rfc3339_us(micros)) == micros


def test_python_dash_m_serves_and_help_lists_env_vars(tmp_path: Path, server_factory: object) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "tlytics", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    for variable in ("TLYTICS_HOST", "TLYTICS_PORT", "TLYTICS_DB", "TLYTICS_SPOOL", "TLYTICS_SPOOL_SYNC", "TLYTICS_FLUSH"):
        assert variable in help_text
    server = server_factory(extra_env={"TLYTICS_PORT": "1"}).start()  # type: ignore[operator]
    status, body = http_json("GET", server.url + "/health")
    assert status == 200 and body["port"] == server.port  # the flag beat TLYTICS_PORT=1
