"""Requests the HTTP parser refuses (a header with a trailing CR, a control character, a line too
long) are answered with our JSON and no header text, and nothing of the header reaches the log
(issue 19, item 6): a malformed `Authorization` header must not leak its key. On a real server,
with raw sockets, since a client library would refuse to send such requests."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from tests.helpers import ServerProcess, eventually

SECRET = "s3cr3t-key-0123456789abcdef"
READ_KEY = "r" * 24

MALFORMED = {
    "trailing-cr": f"Authorization: Bearer {SECRET}\r\r\n".encode(),
    "control-char": f"Authorization: Bearer {SECRET}\x01\r\n".encode(),
    "nul": f"Authorization: Bearer {SECRET}\x00\r\n".encode(),
    "line-too-long": f"Authorization: Bearer {SECRET}{'x' * 9000}\r\n".encode(),
    "bare-lf-in-value": f"Authorization: Bearer {SECRET}\nX: y\r\n".encode(),
    "space-before-colon": f"Authorization : Bearer {SECRET}\r\n".encode(),
    "no-colon": f"Authorization Bearer {SECRET}\r\n".encode(),
    "bad-request-line": f"GET /{SECRET}\x7f HTTP/1.1\r\n".encode(),
}


def raw_request(port: int, header_line: bytes) -> bytes:
    """Send one request with `header_line` among its headers and read the whole answer."""
    if header_line.startswith(b"GET "):
        request = header_line + b"Host: 127.0.0.1\r\n\r\n"
    else:
        request = b"GET /view HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header_line + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        for _ in range(1000):  # the server closes the connection after a refusal
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Any:
    process = ServerProcess(tmp_path_factory.mktemp("protocol") / "a.db", extra_args=["--read-key", READ_KEY])
    process.start()
    yield process
    process.stop()


@pytest.mark.parametrize("header_line", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_is_json_without_the_header_in_answer_or_log(server: Any, header_line: bytes) -> None:
    answer = raw_request(server.port, header_line)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0]
    assert status_line.split(b" ")[1] in (b"400", b"431"), answer[:200]
    assert b"application/json" in head
    refusal = json.loads(body)
    assert "error" in refusal
    assert SECRET.encode() not in answer
    assert b"Bearer" not in body

    # The refusal is logged (one JSON line, with the kind of error), the header is not.
    def refusal_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "http_request_refused"]

    assert eventually(refusal_lines, what="the refusal's log line")
    log = server.log()
    assert SECRET not in log and "Bearer" not in log
    assert all(json.loads(line) for line in log.splitlines())
