"""The JSON log lines: what the faster set-up of logs.py writes must stay what a log shipper
parses — every line, in order, with its level, logger and an ISO 8601 UTC timestamp."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.helpers import ServerProcess, eventually, http_json
from tlytics.logs import configure_logging, stop_routing_stdlib_logging

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def json_logs() -> Iterator[None]:
    configure_logging("info", json=True)
    structlog.configure(cache_logger_on_first_use=False)  # each test's own capture of stdout
    yield
    structlog.reset_defaults()
    stop_routing_stdlib_logging()


def lines_of(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_lines_logged_in_an_event_loop_all_come_out_in_order(json_logs: None, capsys: Any) -> None:
    log = structlog.get_logger("tlytics.test")

    async def serve() -> None:
        structlog.contextvars.bind_contextvars(request_id="r-1")
        for n in range(50):
            log.info("request", n=n)
            if n % 7 == 0:
                await asyncio.sleep(0)
        log.warning("last", n=50)
        structlog.contextvars.clear_contextvars()

    asyncio.run(serve())
    lines = lines_of(capsys.readouterr().out)
    assert [line["n"] for line in lines] == list(range(51))
    assert {(line["logger"], line["request_id"]) for line in lines} == {("tlytics.test", "r-1")}
    assert [line["level"] for line in lines] == ["info"] * 50 + ["warning"]
    assert all(ISO_UTC.fullmatch(line["timestamp"]) for line in lines)


def test_a_line_logged_outside_a_loop_is_written_at_once(json_logs: None, capsys: Any) -> None:
    structlog.get_logger("tlytics.writer").error("writer_batch_failed", error="disk I/O error")
    (line,) = lines_of(capsys.readouterr().out)
    assert (line["event"], line["level"], line["logger"]) == ("writer_batch_failed", "error", "tlytics.writer")


def test_lines_still_waiting_when_the_process_exits_are_written() -> None:
    # A loop that logs and stops before its next iteration: the lines wait for a write that
    # the loop never runs; the exit hook writes them.
    program = (
        "import asyncio, structlog\n"
        "from tlytics.logs import configure_logging\n"
        "configure_logging('info', json=True)\n"
        "async def main():\n"
        "    structlog.get_logger('t').info('before_exit', n=1)\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.run_until_complete(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60, check=True)
    (line,) = lines_of(done.stdout.decode())
    assert line["event"] == "before_exit" and line["n"] == 1


def test_a_loop_in_another_thread_logs_beside_the_first_one(json_logs: None, capsys: Any) -> None:
    log = structlog.get_logger("tlytics.test")
    other_done = threading.Event()

    def other_loop() -> None:
        async def work() -> None:
            for n in range(20):
                log.info("other", n=n)
                await asyncio.sleep(0)

        asyncio.run(work())
        other_done.set()

    async def main_loop() -> None:
        log.info("main", n=0)
        thread = threading.Thread(target=other_loop)
        thread.start()
        for n in range(1, 200):  # bounded: the other thread logs 20 lines
            log.info("main", n=n)
            await asyncio.sleep(0.001)
            if other_done.is_set() and n >= 20:
                break
        thread.join(30)

    asyncio.run(main_loop())
    lines = lines_of(capsys.readouterr().out)
    assert [line["n"] for line in lines if line["event"] == "other"] == list(range(20))
    mains = [line["n"] for line in lines if line["event"] == "main"]
    assert mains == list(range(len(mains))) and len(mains) >= 21


def test_stdlib_logging_and_warnings_are_json_lines_on_stdout() -> None:
    """What libraries log through stdlib logging, and what they warn (warnings.warn), went to
    stderr as plain text: in the server's log, lines that were not JSON."""
    program = (
        "import logging, warnings\n"
        "from tlytics.logs import configure_logging\n"
        "configure_logging('info', json=True)\n"
        "logging.getLogger('some.library').warning('disk %s is slow', 'sda')\n"
        "logging.getLogger('some.library').info('chatter stays out')\n"
        "warnings.warn('a deprecated thing', UserWarning)\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('asyncio').exception('Task exception was never retrieved')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60, check=True)
    assert done.stderr == b""
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("some.library", "warning"),
        ("py.warnings", "warning"),
        ("asyncio", "error"),
    ]
    assert lines[0]["event"] == "disk sda is slow" and "a deprecated thing" in lines[1]["event"]
    assert lines[2]["exception"][0]["exc_type"] == "ZeroDivisionError"


def test_after_a_kill_every_line_of_the_log_is_json(tmp_path: Path) -> None:
    """kill -9 of a real server: its writer's helper processes (multiprocessing's resource
    tracker) clean up after it and used to warn about leaked semaphores in plain text, into
    the same log. Once they have all exited, every line still parses."""
    server = ServerProcess(tmp_path / "a.db").start()
    assert http_json("POST", server.url + "/events", [{"key": "a"}])[0] == 200
    assert server.process is not None
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children  # the writer process and the resource tracker
    server.kill()

    def all_gone() -> bool:
        for child in children:
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                continue
            if state != "Z":
                return False
        return True

    eventually(all_gone, timeout_s=60, what="the server's child processes to exit")
    lines = server.log().splitlines()
    assert lines and [line for line in lines if not line.startswith("{")] == []
    assert all(json.loads(line) for line in lines)
