"""The keys file (`--keys-file`): its format, a bad line at start (exit 1 naming the line) and on
a reload (old keys kept, an error naming the line), and rotation without a restart on a real
server: by SIGHUP while requests run (none fails), and by editing the file alone."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers import ServerProcess, eventually, free_port, http_json, server_argv
from tlytics.ingest.keys import ApiKey, KeyRing, Keys, KeysFileError, parse_keys_file
from tlytics.ingest.keys_file import KeysFileWatcher

KEPT_WRITE = "kept-write-key-0123456789"
KEPT_STATS = "kept-stats-key-0123456789"
OLD_READ = "old-read-key-0123456789ab"
NEW_READ = "new-read-key-0123456789ab"
ROTATION_REQUESTS_MAX = 3000
ROTATION_TIME_MAX_S = 120.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_text(*lines: str) -> str:
    return "\n".join(["# scope secret label", *lines, ""])


def replace_file(path: Path, text: str) -> None:
    """Write `text` as editors and config tools do: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_a_keys_file_gives_scope_secret_and_label() -> None:
    keys = parse_keys_file(
        keys_text(f"write {KEPT_WRITE} web frontend", "", f"  stats   {KEPT_STATS}", "# admin nothing"), "keys.txt"
    )
    assert [(key.scope, key.label) for key in keys] == [("write", "web frontend"), ("stats", "keys.txt:4")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{OLD_READ} read", "the first word must be a scope"),
        ("owner " + OLD_READ, "the first word must be a scope"),
        ("read", "without its secret"),
        ("read short-key", "16 to 1024 characters"),
        # A key the HTTP parser could never take (a header line over 8190 bytes).
        ("read " + "k" * 9000, "16 to 1024 characters"),
        (f"read {OLD_READ},x", "without spaces or commas"),
        # A header carries keys: http.client sends é as latin-1 (another byte), cannot send €.
        (f"read {OLD_READ}é", "printable ASCII"),
        (f"read {OLD_READ}\x7f", "printable ASCII"),
        (f"write {KEPT_WRITE}", "the same key as on line 2"),
    ],
)
def test_a_bad_line_is_named_without_its_secret(line: str, reason: str) -> None:
    with pytest.raises(KeysFileError) as raised:
        parse_keys_file(keys_text(f"write {KEPT_WRITE}", line), "/etc/tlytics/keys")
    message = str(raised.value)
    assert message.startswith("/etc/tlytics/keys, line 3: "), message
    assert reason in message
    assert OLD_READ not in message and KEPT_WRITE not in message


def test_a_reload_with_a_bad_line_keeps_the_keys_in_force(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(keys_text(f"read {OLD_READ} analyst"))
    keys = Keys(())
    watcher = KeysFileWatcher(path, keys)
    watcher.load()
    ring = keys.ring
    replace_file(path, keys_text(f"read {NEW_READ} analyst", "read too-short"))
    with capture_logs() as logs:
        assert watcher.check() is False
        path.unlink()
        assert watcher.check(force=True) is False  # a vanished file, on SIGHUP
    assert keys.ring is ring
    assert ring.find(OLD_READ.encode()) is not None and ring.find(NEW_READ.encode()) is None
    errors = {log["event"]: log for log in logs if log["log_level"] == "error"}
    assert "line 3" in errors["keys_file_invalid"]["error"]
    assert errors["keys_file_invalid"]["kept_keys"] == 1
    assert "keys_file_unreadable" in errors
    assert OLD_READ not in repr(logs) and NEW_READ not in repr(logs)


def test_with_a_keys_file_removing_the_last_key_of_a_kind_refuses_that_kind(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(keys_text(f"write {KEPT_WRITE}", f"read {OLD_READ}"))
    keys = Keys((), keys_file=True)
    watcher = KeysFileWatcher(path, keys)
    watcher.load()
    replace_file(path, keys_text(f"write {KEPT_WRITE}"))
    assert watcher.check() is True
    # Without a keys file, no reading key would mean reading is open to anyone.
    assert keys.ring.needs_key("read") and keys.ring.needs_key("stats") and keys.ring.needs_key("admin")
    replace_file(path, "")
    assert watcher.check() is True
    assert keys.ring.keys == () and keys.ring.needs_key("write")


def test_one_secret_with_two_scopes_is_refused_by_label() -> None:
    with pytest.raises(KeysFileError) as raised:
        KeyRing([ApiKey.of("read", OLD_READ, "--read-key #1"), ApiKey.of("admin", OLD_READ, "keys:3")])
    assert str(raised.value) == "keys:3: the same key is also a read key (--read-key #1)"


def test_a_bad_keys_file_stops_the_start_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(keys_text(f"write {KEPT_WRITE}", f"reader {OLD_READ}"))
    completed = subprocess.run(
        server_argv(free_port(), "--db", str(tmp_path / "a.db"), "--keys-file", str(path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert f"{path}, line 3: the first word must be a scope" in completed.stderr
    assert OLD_READ not in completed.stderr + completed.stdout


def keyed_server(server_factory: Any, keys_file: Path) -> ServerProcess:
    server: ServerProcess = server_factory(extra_args=["--keys-file", str(keys_file)])
    return server.start()


def status_with(server: ServerProcess, key: str, path: str = "/view") -> int:
    return http_json("GET", server.url + path, headers=bearer(key))[0]


class Traffic:
    """Requests with the kept keys in a thread, until stopped (bounded in count and time)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for n in range(ROTATION_REQUESTS_MAX):
            if self._stop.is_set():
                return
            if n % 2:
                status, _ = http_json(
                    "POST", self.server.url + "/events", [{"key": "during_reload"}], headers=bearer(KEPT_WRITE)
                )
            else:
                status = status_with(self.server, KEPT_STATS, "/stats")
            self.statuses[status] += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=ROTATION_TIME_MAX_S)


def test_sighup_rotates_keys_while_requests_run(server_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(keys_text(f"write {KEPT_WRITE} sender", f"stats {KEPT_STATS} wall", f"read {OLD_READ} old"))
    # An hour old, and the edit below keeps inode, size and that time: only SIGHUP reloads it.
    an_hour_ago_ns = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(an_hour_ago_ns, an_hour_ago_ns))
    server = keyed_server(server_factory, path)
    assert server.process is not None
    assert status_with(server, OLD_READ) == 200
    assert status_with(server, NEW_READ) == 401
    with Traffic(server) as traffic:
        eventually(lambda: sum(traffic.statuses.values()) >= 10, what="traffic before the reload")
        path.write_text(keys_text(f"write {KEPT_WRITE} sender", f"stats {KEPT_STATS} wall", f"read {NEW_READ} new"))
        os.utime(path, ns=(an_hour_ago_ns, an_hour_ago_ns))
        os.kill(server.process.pid, signal.SIGHUP)
        eventually(lambda: status_with(server, OLD_READ) == 401, timeout_s=30, what="the removed key refused")
        assert status_with(server, NEW_READ) == 200
        settled = sum(traffic.statuses.values())
        eventually(lambda: sum(traffic.statuses.values()) >= settled + 10, what="traffic after the reload")
    assert set(traffic.statuses) == {200}, traffic.statuses  # no request failed during the reload
    assert server.process.poll() is None  # SIGHUP reloads; it does not stop the server
    log = server.log()
    assert '"keys_reload_requested"' in log and '"removed":["old"]' in log and '"added":["new"]' in log
    assert '"key_label":"sender"' in log  # each request's line names its key by label
    assert OLD_READ not in log and NEW_READ not in log and KEPT_WRITE not in log


def test_editing_the_file_alone_rotates_keys(server_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(keys_text(f"read {OLD_READ} old"))
    server = keyed_server(server_factory, path)
    assert status_with(server, OLD_READ) == 200
    replace_file(path, keys_text(f"read {NEW_READ} new"))  # a new inode, no signal
    eventually(lambda: status_with(server, NEW_READ) == 200, timeout_s=30, what="the new key accepted")
    assert status_with(server, OLD_READ) == 401
    # A bad edit keeps the keys in force; fixing it is picked up again.
    replace_file(path, keys_text(f"read {NEW_READ} new", "admin too-short"))
    eventually(lambda: '"keys_file_invalid"' in server.log(), timeout_s=30, what="the bad edit logged")
    assert status_with(server, NEW_READ) == 200
    assert status_with(server, OLD_READ + "x") == 401
    assert "line 3" in server.log()
    replace_file(path, keys_text(f"admin {OLD_READ}x root"))
    eventually(lambda: status_with(server, OLD_READ + "x") == 200, timeout_s=30, what="the fixed file loaded")
    assert status_with(server, NEW_READ) == 401
    status, body = http_json("DELETE", server.url + "/events?key=nothing", headers=bearer(OLD_READ + "x"))
    assert status == 200, body


def test_sighup_without_a_keys_file_is_logged_and_the_server_keeps_serving(server_factory: Any) -> None:
    """SIGHUP is the reload signal (systemd's ExecReload=kill -HUP); without a keys file there
    is nothing to reload, and the default action killed the server on the spot. A terminal's
    hang-up signals the whole process group: the writer process ignores it too (it died and
    was restarted, a failed batch on the way)."""
    server: ServerProcess = server_factory().start()
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGHUP)  # its own group (start_new_session)
    eventually(lambda: '"sighup_ignored"' in server.log(), what="the ignored SIGHUP in the log")
    assert http_json("POST", f"{server.url}/events", [{"key": "after_sighup"}])[0] == 200
    assert server.wait_drained()["spool_entries"] == 0
    assert server.process.poll() is None
    assert '"writer_process_died_restarting"' not in server.log()
    # Nor did CPython's resource tracker die of it (tracebacks in the log at the stop, not JSON).
    assert server.stop() == 0
    assert all(line.startswith("{") for line in server.log().splitlines()), server.log()


def _unblock_fifo_readers(path: Path) -> None:
    """Open the FIFO for writing, without blocking: a reader stuck in open() (the bug) returns."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting: nothing to unblock


def test_a_fifo_at_the_keys_path_is_a_refused_reload_not_a_stuck_one(tmp_path: Path) -> None:
    """A FIFO (any non-regular file) at the path: the reload is refused at once and logged,
    the keys in force stay, and a regular file put back is loaded again. The open used to
    block until a writer came, stopping reloads for good and later blocking shutdown."""
    path = tmp_path / "keys"
    path.write_text(keys_text(f"read {OLD_READ} analyst"))
    keys = Keys(())
    watcher = KeysFileWatcher(path, keys)
    watcher.load()
    ring = keys.ring
    path.unlink()
    os.mkfifo(path)
    results: list[bool] = []
    with capture_logs() as logs:
        checker = threading.Thread(target=lambda: results.append(watcher.check(force=True)), daemon=True)
        checker.start()
        checker.join(timeout=30)
        stuck = checker.is_alive()
        _unblock_fifo_readers(path)
    assert not stuck, "the reload blocked on the FIFO"
    assert results == [False] and keys.ring is ring
    (refused,) = [log for log in logs if log["event"] == "keys_file_unreadable"]
    assert "not a regular file" in refused["error"] and refused["kept_keys"] == 1
    path.unlink()
    path.write_text(keys_text(f"read {NEW_READ} analyst"))
    assert watcher.check() is True
    assert keys.ring.find(NEW_READ.encode()) is not None


def test_a_fifo_at_start_stops_the_start_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    os.mkfifo(path)
    try:
        with pytest.raises(KeysFileError, match="not a regular file"):
            KeysFileWatcher(path, Keys(())).load()
    finally:
        _unblock_fifo_readers(path)


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o604, True), (0o640, False), (0o600, False)])
def test_a_keys_file_others_may_read_is_warned_about(tmp_path: Path, mode: int, warned: bool) -> None:
    path = tmp_path / "keys"
    path.write_text(keys_text(f"read {OLD_READ} analyst"))
    path.chmod(mode)
    with capture_logs() as logs:
        KeysFileWatcher(path, Keys(())).load()
    warnings = [log for log in logs if log["event"] == "keys_file_readable_by_others"]
    assert bool(warnings) is warned
    if warned:
        assert warnings[0]["mode"] == f"{mode:04o}" and warnings[0]["log_level"] == "warning"
    assert OLD_READ not in repr(logs)


def test_a_server_whose_keys_file_became_a_fifo_keeps_its_keys_and_stops_cleanly(
    server_factory: Any, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(keys_text(f"read {OLD_READ} analyst"))
    server = keyed_server(server_factory, keys_file)
    keys_file.unlink()
    os.mkfifo(keys_file)
    try:
        eventually(lambda: "not a regular file" in server.log(), what="the refused reload in the log")
        assert status_with(server, OLD_READ) == 200
        server.process.send_signal(signal.SIGHUP)  # a forced reload: refused the same way
        assert status_with(server, OLD_READ) == 200
        assert server.stop(timeout_s=60) == 0
    finally:
        _unblock_fifo_readers(keys_file)


@pytest.mark.parametrize("label", ["invoice\u202etxt.exe", "bell\u0007", "zero\u200bwidth", "x" * 201])
def test_a_label_that_could_disguise_itself_is_refused(label: str) -> None:
    """Labels are echoed in logs, 403 answers and /whoami: a right-to-left override or a
    control character in one is refused with the line, not echoed back."""
    with pytest.raises(KeysFileError, match="line 2: the label") as refused:
        parse_keys_file(keys_text(f"read {OLD_READ} {label}"), "keys")
    assert OLD_READ not in str(refused.value) and label not in str(refused.value)
