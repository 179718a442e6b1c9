"""The `tlytics` command line: flags, TLYTICS_* variables (the flag wins), durations."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tlytics.cli
from tests.helpers import free_port, http_json
from tlytics.cli import parse_settings
from tlytics.ingest.settings import Settings, operator_options
from tlytics.rate import Rate
from tlytics.timefmt import format_rfc3339_us, parse_duration_s, parse_rfc3339_us

WRITE_KEY = "w" * 24
READ_KEY = "r" * 24


@pytest.mark.parametrize(
    ("argv", "attribute", "value"),
    [
        (["--max-body", "2MiB"], "max_body_bytes", 2 * 1024 * 1024),
        (["--max-events", "50"], "max_events_per_request", 50),
        (["--max-event-size", "64kB"], "max_event_bytes", 64_000),
        (["--spool-max", "1GiB"], "spool_max_bytes", 1024**3),
        (["--write-key", WRITE_KEY, "--write-key", "x" * 20], "write_keys", (WRITE_KEY, "x" * 20)),
    ],
)
def test_limit_and_key_flags(argv: list[str], attribute: str, value: object) -> None:
    from tlytics.cli import parse_settings

    settings, _ = parse_settings(argv, {})
    assert getattr(settings, attribute) == value


def test_key_environment_lists_and_flag_precedence(capsys: pytest.CaptureFixture[str]) -> None:
    from tlytics.cli import parse_settings

    environ = {"TLYTICS_WRITE_KEYS": f"{WRITE_KEY}, {'y' * 20}", "TLYTICS_READ_KEYS": READ_KEY}
    settings, _ = parse_settings([], environ)
    assert settings.write_keys == (WRITE_KEY, "y" * 20) and settings.read_keys == (READ_KEY,)
    flagged, _ = parse_settings(["--write-key", "z" * 20], environ)
    assert flagged.write_keys == ("z" * 20,)
    with pytest.raises(SystemExit):
        parse_settings([], {"TLYTICS_WRITE_KEYS": "short"})
    assert "short" not in capsys.readouterr().err  # a rejected key is not echoed


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
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("2.5", 2.5),
        ("0", 0.0),
        ("1.5s", 1.5),
    ],
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
    for variable in (
        "TLYTICS_HOST",
        "TLYTICS_PORT",
        "TLYTICS_DB",
        "TLYTICS_SPOOL",
        "TLYTICS_SPOOL_SYNC",
        "TLYTICS_FLUSH",
    ):
        assert variable in help_text
    # A port of its own on the command line (not --port 0): /health says the port flagged.
    server = server_factory(port=free_port(), extra_env={"TLYTICS_PORT": "1"}).start()  # type: ignore[operator]
    status, body = http_json("GET", server.url + "/health")
    assert status == 200 and body["port"] == server.port  # the flag beat TLYTICS_PORT=1


def test_every_default_is_the_documented_one() -> None:
    parsed, _ = parse_settings([], {})
    assert parsed == Settings()
    assert pickle.loads(pickle.dumps(parsed)) == parsed  # handed whole to the writer process
    expected = {
        "host": "0.0.0.0",
        "port": 8081,
        "store_url": None,
        "db_path": Path("analytics.db"),
        "spool_dir": None,
        "spool_sync": "normal",
        "flush_period_s": 5.0,
        "log_level": "info",
        "writer_process": True,
        "workers": 1,
        "max_body_bytes": 10 * 1024 * 1024,
        "max_events_per_request": 10_000,
        "max_event_bytes": 1024 * 1024,
        "body_timeout_s": 30.0,
        "spool_max_bytes": 1024**3,
        "spool_min_free_bytes": 64 * 1024**2,
        "retention_s": None,
        "write_keys": (),
        "stats_keys": (),
        "read_keys": (),
        "admin_keys": (),
        "keys_file": None,
        "rate_limit": None,
        "read_rate_limit": None,
        "read_timeout_s": 10.0,
        "store_unhealthy_after_s": 30.0,
        "start_without_store": False,
        "unique_properties": (),
        "declared_properties": (),
        "cors_origins": (),
        "auth_failure_rate": Rate(per_second=10.0, burst=100, text="10/s,burst=100"),
        "public_properties": (),
        "min_group_size": 5,
    }
    assert {name: getattr(parsed, name) for name, _ in operator_options()} == expected


def test_every_setting_can_be_given_by_flag_or_environment() -> None:
    samples = {
        "--host": "127.0.0.1",
        "--port": "9",
        "--store": "postgresql://tlytics:secret@db.example:5432/tlytics",
        "--db": "/d.db",
        "--spool": "/s",
        "--spool-sync": "full",
        "--flush": "1s",
        "--log-level": "debug",
        "--writer": "thread",
        "--workers": "3",
        "--max-body": "2MiB",
        "--max-events": "7",
        "--max-event-size": "1kB",
        "--body-timeout": "2s",
        "--spool-max": "5MiB",
        "--spool-min-free": "1MiB",
        "--retention": "1d",
        "--write-key": "w" * 16,
        "--read-key": "r" * 16,
        "--stats-key": "s" * 16,
        "--admin-key": "a" * 16,
        "--keys-file": "/etc/tlytics/keys",
        "--rate-limit": "2000/s",
        "--read-rate-limit": "20/s,burst=100",
        "--read-timeout": "2s",
        "--store-unhealthy-after": "1m",
        "--start-without-store": "yes",
        "--unique-property": "data.user_id",
        "--property": "data.amount",
        "--cors-origin": "https://shop.example",
        "--auth-failure-limit": "1/s",
        "--public-property": "data.country",
        "--min-group-size": "10",
    }
    assert set(samples) == {option.flag for _, option in operator_options()}
    default = Settings()
    for name, option in operator_options():
        by_flag, _ = parse_settings([option.flag, samples[option.flag]], {})
        by_environment, _ = parse_settings([], {option.environment_variable: samples[option.flag]})
        assert getattr(by_flag, name) == getattr(by_environment, name) != getattr(default, name), name


@pytest.mark.parametrize(
    ("variable", "value", "flag_value"),
    [
        ("TLYTICS_MAX_BODY", "lots", "1MiB"),
        ("TLYTICS_WRITER", "fork", "thread"),
        ("TLYTICS_LOG_LEVEL", "chatty", "debug"),
        ("TLYTICS_BODY_TIMEOUT", "0", "1s"),
        ("TLYTICS_MAX_EVENTS", "0", "5"),
        ("TLYTICS_WORKERS", "many", "2"),
    ],
)
def test_a_bad_environment_value_is_named_even_when_a_flag_overrides_it(
    variable: str, value: str, flag_value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = next(option.flag for _, option in operator_options() if option.environment_variable == variable)
    with pytest.raises(SystemExit) as exited:
        parse_settings([flag, flag_value], {variable: value})
    assert exited.value.code == 2
    assert f"{variable}={value!r}" in capsys.readouterr().err


def test_the_documented_configuration_table_matches_the_declarations() -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `(TLYTICS_[A-Z_]+)` \| (.*) \|$", readme, re.MULTILINE)
    table = {flag: (variable, default) for flag, variable, default in rows}
    for _, option in operator_options():
        variable, default = table.pop(option.flag)
        assert variable == option.environment_variable
        assert default.lstrip("`").startswith(option.default_text), (option.flag, default)
    assert table == {}, "docs/operations.md documents flags that do not exist"


def test_a_yes_no_flag_alone_means_yes() -> None:
    assert parse_settings(["--start-without-store"], {})[0].start_without_store is True
    assert parse_settings(["--start-without-store", "no"], {})[0].start_without_store is False
    assert parse_settings([], {"TLYTICS_START_WITHOUT_STORE": "true"})[0].start_without_store is True
    with pytest.raises(SystemExit):
        parse_settings(["--start-without-store", "maybe"], {})


def test_a_renamed_server_variable_would_keep_working_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server keeps its names (DESIGN §2), but the command reads a deprecated name the way
    the client does, should one ever be renamed: the old one works, says what replaces it, and
    the new one wins when both are set."""
    renamed = [
        (name, dataclasses.replace(option, deprecated_variables=("TLYTICS_FLUSH_PERIOD_OLD",)))
        if name == "flush_period_s"
        else (name, option)
        for name, option in operator_options()
    ]
    monkeypatch.setattr(tlytics.cli, "operator_options", lambda: renamed)
    assert parse_settings([], {"TLYTICS_FLUSH_PERIOD_OLD": "2s"})[0].flush_period_s == 2.0
    assert "TLYTICS_FLUSH_PERIOD_OLD is deprecated: use TLYTICS_FLUSH instead" in capsys.readouterr().err
    both = {"TLYTICS_FLUSH_PERIOD_OLD": "2s", "TLYTICS_FLUSH": "3s"}
    assert parse_settings([], both)[0].flush_period_s == 3.0
    assert "TLYTICS_FLUSH is also set, and wins" in capsys.readouterr().err
    assert parse_settings(["--flush", "4s"], both)[0].flush_period_s == 4.0  # the flag still wins


def test_workers_auto_is_one_per_core_but_one_and_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    assert parse_settings(["--workers", "auto"], {})[0].workers == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert parse_settings([], {"TLYTICS_WORKERS": "auto"})[0].workers == 1
    with pytest.raises(SystemExit):
        parse_settings(["--workers", "0"], {})
