"""The server's `listening` log line comes once it listens and names the port it bound, so
`--port 0` (any free port, chosen by the system as the server binds) can be read back: the
test servers start that way, with no window in which another process takes a port chosen
beforehand."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import http_json, server_argv


def test_a_server_on_port_0_names_the_port_it_bound_and_answers_there(server_factory: Any) -> None:
    server = server_factory().start()  # --port 0, the port read back from the log
    assert server.process is not None and "--port" in server.process.args
    assert server.process.args[server.process.args.index("--port") + 1] == "0"
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    (listening,) = [record for record in records if record.get("event") == "listening"]
    assert listening["port"] == server.port > 0
    status, health = http_json("GET", server.url + "/health")
    assert status == 200 and health["status"] == "healthy"


def test_a_server_that_cannot_bind_never_says_it_listens(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            server_argv(port, "--db", str(tmp_path / "analytics.db")), capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert '"cannot_start"' in done.stdout and '"listening"' not in done.stdout, done.stdout
