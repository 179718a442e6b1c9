"""The README's quick start, run as a newcomer would: a real fresh server, each `curl` of the
quick start's code blocks in order, each answer compared with the one the README shows.

The README is the test's script: its `# …` lines under a command are the expected answer
(JSON, wrapped over lines as the README likes), where `…` stands for a value that differs
from run to run (ids the server assigns, times, disk figures) and everything else must be
exactly what the server answers, keys in the same order. `sleep N` is read as "wait until the
writer stored every acknowledged event" (bounded), so the test never sleeps on a guess. A
README changed so that it no longer matches the server fails here.
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProcess, eventually, http_json

README = Path(__file__).resolve().parent.parent / "README.md"
README_PORT = 8081
ANY = "\u2026"  # `…` in the README: any value


@dataclass
class Step:
    """One command of the quick start, and the answer the README shows under it (if any)."""

    command: str
    expected: str = ""
    line: int = 0
    expected_lines: list[str] = field(default_factory=list)


def quick_start_section(readme: str) -> str:
    match = re.search(r"^## Quick start\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert match, "the README has no '## Quick start' section"
    return match.group(1)


def shell_steps(section: str) -> list[Step]:
    """The commands of every ```sh block, each with the `# ` lines that follow it."""
    steps: list[Step] = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL):
        current: Step | None = None
        continued = False
        for line in block.splitlines():
            if continued and current is not None:
                current.command += "\n" + line
            elif line.startswith("#") and current is not None:
                current.expected_lines.append(line[1:].strip())
            elif line.strip():
                current = Step(line)
                steps.append(current)
            else:
                current = None
            # A command goes on after a trailing backslash or while a quote is open.
            continued = current is not None and (current.command.endswith("\\") or not _quotes_closed(current.command))
    for step in steps:
        step.command = step.command.replace("\\\n", " ")
        step.expected = "".join(step.expected_lines)
    return steps


def _quotes_closed(command: str) -> bool:
    try:
        shlex.split(command.replace("\\\n", " "))
    except ValueError:
        return False
    return True


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def parse_curl(command: str, port: int) -> Request:
    """The request a quick-start `curl` sends; an option this test does not know fails it."""
    words = shlex.split(command)
    assert words[0] == "curl", command
    method, headers, body, url = "", {}, None, ""
    options = iter(words[1:])
    for word in options:
        if word == "-s":
            continue
        if word == "-X":
            method = next(options)
        elif word == "-H":
            name, value = next(options).split(":", 1)
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(options).encode()
        elif word.startswith("http://"):
            url = word
        else:
            raise AssertionError(f"the quick start uses a curl option this test does not know: {word!r}")
    assert url.startswith(f"http://localhost:{README_PORT}/"), url
    url = url.replace(f"localhost:{README_PORT}", f"127.0.0.1:{port}", 1)
    return Request(method or ("POST" if body is not None else "GET"), url, headers, body)


def send(request: Request) -> tuple[int, Any]:
    prepared = urllib.request.Request(request.url, data=request.body, method=request.method, headers=request.headers)
    try:
        with urllib.request.urlopen(prepared, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def expected_answer(text: str, port: int) -> Any:
    """The README's answer as JSON: a bare `…` becomes the ANY string, the port is this server's."""
    text = re.sub(rf'"port":{README_PORT}\b', f'"port":{port}', text)
    text = re.sub(r'(?<!")\u2026(?!")', f'"{ANY}"', text)
    return json.loads(text)


def assert_matches(shown: Any, answered: Any, where: str = "answer") -> None:
    if shown == ANY:
        return
    if isinstance(shown, dict):
        assert isinstance(answered, dict), f"{where}: the server answered {answered!r}"
        assert list(shown) == list(answered), (
            f"{where}: the README shows keys {list(shown)}, the server {list(answered)}"
        )
        for key in shown:
            assert_matches(shown[key], answered[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(answered, list) and len(shown) == len(answered), f"{where}: {answered!r}"
        for index, (a, b) in enumerate(zip(shown, answered, strict=True)):
            assert_matches(a, b, f"{where}[{index}]")
    else:
        assert shown == answered and type(shown) is type(answered), f"{where}: README {shown!r}, server {answered!r}"


def wait_until_stored(server: ServerProcess) -> None:
    """What the README's `sleep` waits for: every acknowledged event in the store."""

    def stored() -> bool:
        _, health = http_json("GET", f"{server.url}/health")
        return bool(health["spool_entries"] == 0 and health["stored_events"] == health["accepted_events"])

    eventually(stored, timeout_s=60, what="every acknowledged event stored")


def test_the_readme_names_the_two_set_up_commands() -> None:
    readme = README.read_text()
    two_commands = re.search(r"^## Two commands\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert two_commands, "the README has no '## Two commands' section"
    commands = [line.split("#")[0].strip() for line in re.findall(r"^make .*$", two_commands.group(1), re.MULTILINE)]
    assert commands == ["make run", "make test"]


def test_parsing_the_quick_start_finds_its_commands_and_answers() -> None:
    steps = shell_steps(quick_start_section(README.read_text()))
    curls = [step for step in steps if step.command.startswith("curl")]
    assert steps[0].command == "make run"
    assert len(curls) >= 6 and sum(1 for step in curls if step.expected) >= 6
    assert all(step.command.startswith(("curl", "make run", "sleep")) for step in steps), [s.command for s in steps]


@pytest.mark.timeout(240)
def test_the_quick_start_answers_what_the_readme_shows(tmp_path: Path) -> None:
    steps = shell_steps(quick_start_section(README.read_text()))
    # `make run`'s server: the defaults (flush period 5 s), a fresh database.
    server = ServerProcess(tmp_path / "analytics.db", flush="5s").start()
    try:
        for step in steps:
            if step.command == "make run":
                continue
            if step.command.startswith("sleep"):
                wait_until_stored(server)
                continue
            status, answer = send(parse_curl(step.command, server.port))
            if not step.expected:
                assert status == 200, (step.command, answer)
                continue
            assert_matches(expected_answer(step.expected, server.port), answer, step.command.split()[-1])
    finally:
        server.stop()
