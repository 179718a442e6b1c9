"""The shared test helpers fail loudly: a helper that gives up quietly lets the test after it
assert on a situation that never happened (a stream that never got going, a load that ended
by itself before the kill it was meant to be under)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import Sender, eventually, free_port


class _Acknowledging(BaseHTTPRequestHandler):
    """Answers every POST with 200, as the server does an accepted batch."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"accepted": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def acknowledging_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Acknowledging)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_waiting_for_a_first_acknowledgement_that_never_comes_fails() -> None:
    sender = Sender(f"http://127.0.0.1:{free_port()}", threads=2).start()  # nothing listens there
    with pytest.raises(AssertionError, match=r"no request to \S+ acknowledged within 1\.0s"):
        sender.wait_acknowledged(timeout_s=1.0)
    sender.stop()


def test_a_sender_that_stopped_by_itself_fails_at_stop(acknowledging_url: str) -> None:
    sender = Sender(acknowledging_url, threads=2, max_run_s=0.5).start().wait_acknowledged()
    eventually(lambda: sender.ran_out, what="the sender's own bound")
    with pytest.raises(AssertionError, match=r"stopped by itself after 0\.5s"):
        sender.stop()


def test_a_sender_stopped_in_time_passes(acknowledging_url: str) -> None:
    sender = Sender(acknowledging_url, threads=2).start().wait_acknowledged()
    sender.stop()
    assert sender.acknowledged <= sender.sent
