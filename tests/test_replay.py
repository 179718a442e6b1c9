"""tlytics-replay: from a client spool, a server spool, an NDJSON file and stdin; dry runs,
bad lines, and re-runs that store nothing twice."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from tests.helpers import ServerProcess
from tests.shared_server import StoredSince
from tlytics import Client, Config
from tlytics.replay import main as replay

NDJSON_LINES = [
    b'{"key": "a", "data": {"n": 1}}',
    b'{"key": "b", "timestamp": "2025-08-25T10:00:00Z"}',
    b'{"key": "a", "data": {"n": 1}}',  # the same line again: a second, distinct event
    b"this is not json",
    b'{"key": ""}',
    b"",
    b'{"key": "c", "id": "0190f7c4-1234-7abc-8def-0123456789ab"}',
]


def write_ndjson(path: Path) -> Path:
    path.write_bytes(b"\n".join(NDJSON_LINES) + b"\n")
    return path


def run(args: list[str], stdin: bytes | None = None) -> Any:
    return CliRunner().invoke(replay, args, input=stdin)


def test_ndjson_replay_reports_bad_lines_and_reruns_store_nothing_twice(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    server = shared_server
    events_file = write_ndjson(tmp_path / "events.ndjson")

    first = run(["--server", server.url, "--file", str(events_file)])
    assert first.exit_code == 1, first.output  # invalid lines make the run a failure
    assert "read 6, sent 4, already stored 0, invalid 2, failed 0" in first.stdout
    assert f"{events_file}:4: invalid JSON" in first.stderr
    assert f"{events_file}:5: key must not be empty (key)" in first.stderr
    server.wait_drained()
    assert len(stored_since.ids()) == 4

    second = run(["--server", server.url, "--file", str(events_file)])
    assert "read 6, sent 0, already stored 4, invalid 2, failed 0" in second.stdout
    server.wait_drained()
    assert len(stored_since.ids()) == 4


def test_stdin_and_dry_run(shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path) -> None:
    server = shared_server
    good = b'{"key": "from_stdin"}\n{"key": "again"}\n'
    dry = run(["--dry-run", "-"], stdin=good)
    assert dry.exit_code == 0
    assert "dry run: read 2, valid 2, invalid 0" in dry.stdout
    server.wait_drained()
    assert stored_since.ids() == []  # a dry run sends nothing

    sent = run(["--server", server.url, "-"], stdin=good)
    assert sent.exit_code == 0, sent.output
    assert "sent 2" in sent.stdout
    server.wait_drained()
    assert len(stored_since.ids()) == 2


def test_client_spool_replay(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory()  # not started: the client can only spool
    spool = tmp_path / "client-spool"
    client = Client(Config(server_url=server.url, spool_dir=spool, flush_period=3600, retry_max_delay=60))
    ids = {client.emit("offline", {"n": n}) for n in range(250)}
    client.close(timeout=0.2)

    server.start()
    result = run(["--server", server.url, "--spool", str(spool), "--batch-size", "100"])
    assert result.exit_code == 0, result.output
    assert "read 250, sent 250, already stored 0, invalid 0, failed 0" in result.stdout
    server.wait_drained()
    assert set(server.stored_ids()) == ids

    again = run(["--server", server.url, "--spool", str(spool)])
    assert "sent 0, already stored 250" in again.stdout


def test_server_spool_replay_to_another_server(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    from tlytics.spool import Spool

    spool_dir = tmp_path / "old-server.db.spool"
    entry = {"received_at": 1, "events": [[uuid.uuid4().hex, "k", 1_700_000_000_000_000, {"x": 1}] for _ in range(3)]}
    spool = Spool(spool_dir)
    spool.append(orjson.dumps(entry))
    spool.close()  # as the old server left it
    server = shared_server
    result = run(["--server", server.url, "--spool", str(spool_dir)])
    assert result.exit_code == 0, result.output
    server.wait_drained()
    assert sorted(stored_since.ids()) == sorted(str(uuid.UUID(hex=e[0])) for e in entry["events"])


def test_server_down_is_a_failure_with_nonzero_exit(tmp_path: Path) -> None:
    from tests.helpers import free_port

    result = run(["--server", f"http://127.0.0.1:{free_port()}", "-", "--timeout", "0.5"], stdin=b'{"key": "x"}\n')
    assert result.exit_code == 1
    assert "failed 1" in result.stdout


def test_usage_errors() -> None:
    assert run(["--server", "http://127.0.0.1:1"]).exit_code == 2  # no source
    both = run(["--server", "http://127.0.0.1:1", "--file", "x", "-"])
    assert both.exit_code == 2 and "exactly one source" in both.output


def test_console_script_is_installed(tmp_path: Path) -> None:
    events_file = write_ndjson(tmp_path / "events.ndjson")
    script = Path(sys.executable).with_name("tlytics-replay")
    completed = subprocess.run(
        [str(script), "--dry-run", "--file", str(events_file)], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 1
    assert "dry run: read 6, valid 4, invalid 2" in completed.stdout


def test_the_servers_own_export_replays_to_the_same_events(server_factory: Any, tmp_path: Path) -> None:
    import urllib.request

    from tests.helpers import http_json

    source = server_factory(tmp_path / "source.db").start()
    events = [
        {
            "id": str(uuid.uuid4()),
            "key": f"k{n % 3}",
            "timestamp": f"2025-08-25T10:00:{n:02d}.{n:06d}+02:00",
            "data": {"n": n, "nested": {"list": [1, "two", None, True]}, "text": 'é\n"q"'},
        }
        for n in range(1, 40)
    ]
    assert http_json("POST", source.url + "/events", events)[0] == 200
    source.wait_drained()

    def export() -> list[dict[str, Any]]:
        with urllib.request.urlopen(source.url + "/export?format=ndjson&order=asc", timeout=30) as response:
            return [orjson.loads(line) for line in response.read().splitlines()]

    def essence(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(row["id"], row["key"], row["timestamp"], row["data"]) for row in rows]

    before = export()
    assert len(before) == len(events)
    export_file = tmp_path / "export.ndjson"
    export_file.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in before))

    # Into a fresh server: every line is accepted as it is (received_at is the server's).
    target = server_factory(tmp_path / "target.db").start()
    result = run(["--server", target.url, "--file", str(export_file)])
    assert result.exit_code == 0, result.output
    assert f"read {len(events)}, sent {len(events)}, already stored 0, invalid 0, failed 0" in result.stdout
    target.wait_drained()

    # And back into the source after erasing a key there: erased ids stay erased (by design),
    # the rest were never gone, so nothing is sent twice.
    status, erased = http_json("DELETE", source.url + "/events?key=k0")
    assert status == 200 and erased["deleted"] == 13

    with urllib.request.urlopen(target.url + "/export?format=ndjson&order=asc", timeout=30) as response:
        after = [orjson.loads(line) for line in response.read().splitlines()]

    assert essence(after) == essence(before)
    again = run(["--server", source.url, "--file", str(export_file)])
    assert again.exit_code == 0, again.output
    assert "sent 13, already stored 26, invalid 0, failed 0" in again.stdout
    source.wait_drained()
    assert essence(export()) == [row for row in essence(before) if row[1] != "k0"]


def test_invalid_lines_are_reported_once_each_in_file_order(tmp_path: Path) -> None:
    events_file = tmp_path / "mixed.ndjson"
    events_file.write_bytes(
        b"\n".join(
            [
                b'{"key": "fine"}',
                b'{"key": "x", "timestmap": "2025-01-01T00:00:00Z"}',  # a misspelt field
                b"{not json",
                b'{"key": "fine", "data": {"n": 2}}',
                b'{"key": ""}',
                b'{"key": "x"',  # cut short
                b'{"key": "x", "id": "not-a-uuid"}',
                b'{"key": "c", "id": "0190f7c4-1234-7abc-8def-0123456789ab"}',
                b'{"id": "0190f7c4-1234-7abc-8def-0123456789ab", "key": "c"}',  # the same event again
                b'{"key": "other", "id": "0190F7C4-1234-7ABC-8DEF-0123456789AB"}',  # its id, other content
                b"[1,",
            ]
        )
        + b"\n"
    )
    result = run(["--dry-run", "--file", str(events_file)])
    assert result.exit_code == 1
    assert "dry run: read 11, valid 3, invalid 7, repeated 1" in result.stdout
    reported = [line.split(":")[1] for line in result.stderr.splitlines() if line.startswith(str(events_file))]
    assert reported == ["2", "3", "5", "6", "7", "10", "11"]
    assert f"{events_file}:10: id 0190f7c4-1234-7abc-8def-0123456789ab is also {events_file}:8's" in result.stderr


W1, W2, R1 = "write-key-one-0123456789", "write-key-two-0123456789", "read-key-0123456789"


def test_read_key_tells_what_is_already_stored_and_without_it_replay_says_it_cannot(
    server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(extra_args=["--write-key", W1, "--write-key", W2, "--read-key", R1]).start()
    upper_case_id = str(uuid.uuid4()).upper()  # the server accepts any case; /lookup answers lowercase
    events_file = tmp_path / "events.ndjson"
    events_file.write_bytes(
        b"".join(orjson.dumps({"key": "k", "data": {"n": n}}) + b"\n" for n in range(5))
        + orjson.dumps({"key": "k", "id": upper_case_id})
        + b"\n"
    )

    def replay_with(args: list[str], env: dict[str, str | None]) -> Any:
        return CliRunner().invoke(replay, ["--server", server.url, "--file", str(events_file), *args], env=env)

    no_variables: dict[str, str | None] = {
        name: None for name in ("TLYTICS_WRITE_KEYS", "TLYTICS_WRITE_KEY", "TLYTICS_READ_KEYS", "TLYTICS_READ_KEY")
    }
    first = replay_with(["--write-key", W2], no_variables)
    assert first.exit_code == 0, first.output
    warnings = [line for line in first.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "needs a read key" in warnings[0] and "--read-key" in warnings[0]
    assert "read 6, sent 6, already stored unknown, invalid 0, failed 0" in first.stdout
    server.wait_drained()  # acknowledged is not yet stored: /lookup answers for the store

    # The server's own variable names: a comma-separated list, of which any key will do.
    with_read_key = replay_with([], {"TLYTICS_WRITE_KEYS": f"{W1},{W2}", "TLYTICS_READ_KEYS": R1})
    assert with_read_key.exit_code == 0, with_read_key.output
    assert "warning" not in with_read_key.stderr
    assert "read 6, sent 0, already stored 6, invalid 0, failed 0" in with_read_key.stdout

    # The old single-key names still work, and a refused read key is said to be refused.
    wrong_read_key = replay_with(
        [], {**no_variables, "TLYTICS_WRITE_KEY": W1, "TLYTICS_READ_KEY": "not-the-read-key-at-all"}
    )
    assert wrong_read_key.exit_code == 0, wrong_read_key.output
    assert "refused the read key" in wrong_read_key.stderr
    assert "sent 6, already stored unknown" in wrong_read_key.stdout
    server.wait_drained()
    stored = server_ids_with_key(server, R1)
    assert len(stored) == 6 and upper_case_id.lower() in stored  # nothing stored twice


def server_ids_with_key(server: Any, read_key: str) -> list[str]:
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/view?page_size=100", headers={"Authorization": f"Bearer {read_key}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return [event["id"] for event in orjson.loads(response.read())["events"]]
