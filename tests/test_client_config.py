"""Client configuration: TLYTICS_CLIENT_* environment variables (and their deprecated old
names without CLIENT_), the disabled client, the default spool directory, a spool directory
that cannot be written, before_send and default_data."""

from __future__ import annotations

import logging
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from tests.fake_server import FakeServer
from tests.helpers import ServerProcess, eventually
from tests.shared_server import StoredSince
from tlytics import BeforeSendFailed, Client, Config, Event, InvalidEvent, SpoolError, TlyticsError
from tlytics.client.config import client_options, settable_fields
from tlytics.client.sender import MIN_IDLE_WAIT_S

# A value for each field the environment may set, and what Config makes of it.
ENVIRONMENT = {
    "TLYTICS_CLIENT_SERVER_URL": ("https://analytics.example:8443", "https://analytics.example:8443"),
    "TLYTICS_CLIENT_WRITE_KEY": ("wk_secret", "wk_secret"),
    "TLYTICS_CLIENT_FLUSH_PERIOD": ("2.5", 2.5),
    "TLYTICS_CLIENT_SPOOL_DIR": ("/var/spool/app", Path("/var/spool/app")),
    "TLYTICS_CLIENT_SPOOL_INTERVAL": ("0", 0.0),
    "TLYTICS_CLIENT_MAX_BATCH": ("250", 250),
    "TLYTICS_CLIENT_MAX_BATCH_BYTES": ("65536", 65536),
    "TLYTICS_CLIENT_SPOOL_MAX_BYTES": ("1000000", 1_000_000),
    "TLYTICS_CLIENT_TIMEOUT": ("3", 3.0),
    "TLYTICS_CLIENT_RETRY_MAX_DELAY": ("7.5", 7.5),
    "TLYTICS_CLIENT_GZIP_MIN_BYTES": ("100", 100),
    "TLYTICS_CLIENT_MAX_MEMORY_EVENTS": ("42", 42),
    "TLYTICS_CLIENT_DISABLED": ("1", True),
    "TLYTICS_CLIENT_FLUSH_AT_EXIT": ("0", 0.0),
    "TLYTICS_CLIENT_DEFAULT_DATA": ('{"service": "billing"}', {"service": "billing"}),
    "TLYTICS_CLIENT_SPOOL_MIN_FREE_BYTES": ("1048576", 1_048_576),
    "TLYTICS_CLIENT_CAPTURE": ("yes", True),
    "TLYTICS_CLIENT_HEADERS": ('{"X-Team": "growth"}', {"X-Team": "growth"}),
    "TLYTICS_CLIENT_CA_BUNDLE": ("/etc/ssl/internal-ca.pem", Path("/etc/ssl/internal-ca.pem")),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, option in client_options():
        for variable in option.all_variables:
            monkeypatch.delenv(variable, raising=False)


def stored_data(stored: StoredSince) -> dict[str, tuple[str, dict[str, Any]]]:
    """What the shared server stored since the test began: each event's key and data, by id."""
    return {event["id"]: (event["key"], event["data"]) for event in stored.events()}


def test_every_field_but_the_callables_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {variable for _, variable in settable_fields()} == set(ENVIRONMENT)
    for variable, (text, _) in ENVIRONMENT.items():
        monkeypatch.setenv(variable, text)
    config = Config()
    for name, variable in settable_fields():
        assert getattr(config, name) == ENVIRONMENT[variable][1], variable
    assert "wk_secret" not in repr(config)


def test_an_explicit_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLYTICS_CLIENT_SERVER_URL", "http://from-env:1")
    monkeypatch.setenv("TLYTICS_CLIENT_FLUSH_PERIOD", "9")
    monkeypatch.setenv("TLYTICS_CLIENT_DISABLED", "true")
    config = Config(server_url="http://explicit:2", disabled=False)
    assert config.server_url == "http://explicit:2"
    assert config.disabled is False  # explicit, though equal to the default
    assert config.flush_period == 9.0  # not given: from the environment


def old_name(variable: str) -> str:
    """The name the client read before its variables said whose they are."""
    return "TLYTICS_" + variable.removeprefix("TLYTICS_CLIENT_")


def test_every_variable_says_it_is_the_clients() -> None:
    for name, option in client_options():
        assert option.environment_variable == f"TLYTICS_CLIENT_{name.upper()}"
        assert option.deprecated_variables == (old_name(option.environment_variable),)


@pytest.mark.parametrize("variable", sorted(ENVIRONMENT))
def test_every_old_variable_still_works_and_warns_naming_the_new_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str
) -> None:
    text, expected = ENVIRONMENT[variable]
    monkeypatch.setenv(old_name(variable), text)
    name = next(name for name, option in client_options() if option.environment_variable == variable)
    with caplog.at_level(logging.WARNING, logger="tlytics.client"), pytest.warns(DeprecationWarning) as warned:
        config = Config()
    assert getattr(config, name) == expected
    (warning,) = warned
    message = str(warning.message)
    assert f"{old_name(variable)} is deprecated: use {variable} instead" == message
    # Shown at the application's line that made the Config, not inside tlytics.
    assert warning.filename == __file__
    assert [r.getMessage() for r in caplog.records if r.name == "tlytics.client"] == [message]


def test_the_new_variable_wins_over_the_old_and_the_warning_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TLYTICS_CLIENT_FLUSH_PERIOD", "2.5")
    monkeypatch.setenv("TLYTICS_FLUSH_PERIOD", "9")
    expected = "TLYTICS_FLUSH_PERIOD is deprecated and ignored"
    with (
        caplog.at_level(logging.WARNING, logger="tlytics.client"),
        pytest.warns(DeprecationWarning, match=expected) as warned,
    ):
        config = Config()
    assert config.flush_period == 2.5
    assert "TLYTICS_CLIENT_FLUSH_PERIOD is also set, and wins" in str(warned[0].message)
    assert any("TLYTICS_CLIENT_FLUSH_PERIOD is also set" in r.getMessage() for r in caplog.records)


def test_a_new_variable_alone_gives_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLYTICS_CLIENT_MAX_BATCH", "7")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Config().max_batch == 7


def test_a_client_made_from_the_environment_warns_at_the_applications_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TLYTICS_DISABLED", "1")
    with pytest.warns(DeprecationWarning, match="use TLYTICS_CLIENT_DISABLED") as warned:
        client = Client()  # the Config is made inside tlytics
    assert client.config.disabled is True
    assert warned[0].filename == __file__


def test_a_malformed_old_variable_is_named_and_a_secret_one_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLYTICS_MAX_BATCH", "lots")
    with pytest.raises(ValueError, match="TLYTICS_MAX_BATCH='lots'") as raised:
        Config()
    assert "use TLYTICS_CLIENT_MAX_BATCH instead" in str(raised.value)
    monkeypatch.delenv("TLYTICS_MAX_BATCH")
    monkeypatch.setenv("TLYTICS_WRITE_KEY", "clé-secrète-0123456789")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="write_key") as raised:
        Config()
    assert "secrète" not in str(raised.value)


def test_the_documented_configuration_table_names_each_fields_variable() -> None:
    """docs/client.md's table (field, variable, default, meaning): a row for a field the
    environment may set names the variable Config reads."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "client.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| `(TLYTICS_[A-Z_]+)`", page, re.MULTILINE))
    declared = dict(settable_fields())
    assert rows and set(rows) <= set(declared), set(rows) - set(declared)
    assert {name: declared[name] for name in rows} == rows


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("TLYTICS_CLIENT_FLUSH_PERIOD", "5s"),
        ("TLYTICS_CLIENT_MAX_BATCH", "lots"),
        ("TLYTICS_CLIENT_DISABLED", "maybe"),
        ("TLYTICS_CLIENT_DEFAULT_DATA", "[1, 2]"),
        ("TLYTICS_CLIENT_TIMEOUT", "nan"),
    ],
)
def test_a_malformed_variable_is_a_value_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ValueError, match=variable):
        Config()


def test_a_server_url_from_the_environment_is_checked_like_an_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLYTICS_CLIENT_SERVER_URL", "ftp://nope")
    with pytest.raises(ValueError, match="server_url"):
        Config()


def test_default_spool_dir_is_the_user_cache_directory() -> None:
    assert Path(Config().spool_dir) == Path(platformdirs.user_cache_dir("tlytics")) / "spool"


def test_disabled_client_validates_and_returns_ids_without_threads_or_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TLYTICS_CLIENT_DISABLED", "1")
    spool = tmp_path / "never-created"
    threads_before = set(threading.enumerate())
    client = Client(Config(spool_dir=spool, server_url="http://127.0.0.1:9"))
    event_id = client.emit("signup", {"plan": "pro"})
    assert len(event_id) == 36
    assert (
        client.emit(Event(key="x", id="0190a5d6-0000-7000-8000-000000000001")) == "0190a5d6-0000-7000-8000-000000000001"
    )
    with pytest.raises(InvalidEvent):
        client.emit("")
    with pytest.raises(InvalidEvent):
        client.emit("k", ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert client.emit_and_send("payment", {"amount": 1}) is not None
    assert client.flush(timeout=5) is True
    assert client.pending() == 0
    assert client.close(timeout=5) is True
    assert not set(threading.enumerate()) - threads_before
    assert not spool.exists()


def test_unwritable_spool_dir_keeps_events_in_memory_then_delivers_once_it_can(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = shared_server
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the spool's parent directory should be")
    errors: list[TlyticsError] = []
    with caplog.at_level(logging.WARNING, logger="tlytics.client"):
        client = Client(
            Config(
                server_url=server.url,
                spool_dir=blocker / "spool",
                flush_period=0.1,
                spool_interval=0.02,
                max_memory_events=50,
                on_error=errors.append,
            )
        )
        ids = [client.emit("signup", {"n": n}) for n in range(80)]
        assert client.flush(timeout=5) is False  # nothing can leave before the spool opens
        assert client.dropped == 30  # the newest beyond max_memory_events
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "spool" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert isinstance(errors[0], SpoolError) and str(blocker) in str(errors[0])
    # The directory becomes writable (a volume mounted late): the oldest 50 go out, in order.
    blocker.unlink()
    assert client.close(timeout=30) is True
    server.wait_drained()
    assert sorted(stored_since.ids()) == sorted(ids[:50])


def test_before_send_scrubs_drops_and_default_data_is_merged(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    server = shared_server
    errors: list[TlyticsError] = []

    def scrub(event: Event) -> Event | None:
        assert event.data is not None
        if event.key == "healthcheck":
            return None
        if event.key == "boom":
            raise RuntimeError("hook bug")
        data = {k: v for k, v in event.data.items() if k != "email"}
        return Event(key=event.key, data=data, id=event.id, timestamp=event.timestamp)

    client = Client(
        Config(
            server_url=server.url,
            spool_dir=tmp_path / "spool",
            before_send=scrub,
            default_data={"service": "billing", "region": "eu"},
            on_error=errors.append,
        )
    )
    kept = client.emit("signup", {"email": "a@example.com", "plan": "pro", "region": "us"})
    client.emit("healthcheck")
    failed = client.emit("boom", {"email": "b@example.com"})
    assert client.close(timeout=30) is True
    server.wait_drained()
    assert stored_data(stored_since) == {kept: ("signup", {"service": "billing", "region": "us", "plan": "pro"})}
    assert client.stats.filtered == 1 and client.stats.before_send_failed == 1
    assert client.dropped == 0  # dropped on purpose is not lost
    assert [type(e) for e in errors] == [BeforeSendFailed]
    assert isinstance(errors[0], BeforeSendFailed) and errors[0].event_id == failed


@pytest.mark.parametrize(
    ("variable", "text", "argument"),
    [
        # Each is a client that would never deliver, drop everything or hang its exit.
        ("TLYTICS_CLIENT_TIMEOUT", "0", {"timeout": 0}),
        ("TLYTICS_CLIENT_SPOOL_MAX_BYTES", "-5", {"spool_max_bytes": 0}),
        (None, None, {"flush_at_exit": float("inf")}),
        (None, None, {"flush_period": float("nan")}),
    ],
)
def test_a_value_that_would_lose_events_or_hang_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, text: str | None, argument: dict[str, Any]
) -> None:
    if variable is not None and text is not None:
        monkeypatch.setenv(variable, text)
        with pytest.raises(ValueError, match=variable.removeprefix("TLYTICS_CLIENT_").lower()):
            Config()
    with pytest.raises(ValueError, match=next(iter(argument))):
        Config(**argument)


def test_flush_period_zero_sends_at_once_without_spinning_while_idle(tmp_path: Path) -> None:
    """flush_period=0 (send as soon as possible) delivers, and the idle sender still waits
    between looks at the empty spool (it polled in a loop, most of a core for nothing)."""
    fake = FakeServer().start()
    try:
        client = Client(Config(server_url=fake.url, spool_dir=tmp_path / "s", flush_period=0, spool_interval=0))
        try:
            client.emit("signup")
            assert client.flush(timeout=30)
            sender = client._sender
            assert sender is not None
            waits: list[float] = []
            step = sender.step

            def recording_step(*transports: Any) -> Any:
                answer = step(*transports)
                waits.append(answer[1])
                return answer

            sender.step = recording_step  # type: ignore[method-assign]
            eventually(lambda: len(waits) >= 2, what="two idle steps")
            assert min(waits) >= MIN_IDLE_WAIT_S
        finally:
            client.close(timeout=5)
    finally:
        fake.stop()


@pytest.mark.parametrize("key", ["clé-secrète-0123456789", "key-€-0123456789abcdef", "with space-0123456789"])
def test_a_write_key_that_is_not_printable_ascii_is_refused_unshown(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """http.client sends a header as latin-1: a € key killed the sender thread (events stayed
    on disk, nothing reported), an é key arrived as other bytes than the server's key (401)."""
    with pytest.raises(ValueError, match="write_key") as raised:
        Config(write_key=key)
    assert key not in str(raised.value)
    monkeypatch.setenv("TLYTICS_CLIENT_WRITE_KEY", key)
    with pytest.raises(ValueError, match="write_key"):
        Config()
