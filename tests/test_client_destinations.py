"""One spool per destination (issue 18, item 2): two applications on one machine, both with
the default spool_dir, each send their own events to their own server under their own key.
They once shared one queue, and whichever held the sender lease sent both apps' events to
its server. A spool_dir left by the earlier layout is adopted by the first client to open it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson

from tests.helpers import ServerProcess
from tests.shared_server import StoredSince
from tlytics import Client, Config
from tlytics.client.destination import destination_dir
from tlytics.spool import Spool

ROOT = Path(__file__).resolve().parent.parent
WRITE_A, READ_A = "write-key-a-0123456789", "read-key-a-0123456789"
WRITE_B, READ_B = "write-key-b-0123456789", "read-key-b-0123456789"

APP = """
import sys, time
from tlytics import Client, Config
client = Client(Config(server_url=sys.argv[1], write_key=sys.argv[2], flush_period=0.1))
ids = []
for n in range(300):
    ids.append(client.emit("app_event", {"n": n}))
    if n % 50 == 0:
        time.sleep(0.05)  # the other app runs meanwhile
assert client.close(timeout=60), client.stats
print(" ".join(ids))
"""


def start_app(url: str, key: str, cache_home: Path) -> subprocess.Popen[str]:
    # Both apps use the default spool_dir: the user's cache directory, the same for both.
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    env = {name: value for name, value in env.items() if not name.startswith("TLYTICS_")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(APP), url, key], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )


def test_two_apps_on_the_default_spool_each_send_only_their_events_to_their_server(
    server_factory: Any, tmp_path: Path
) -> None:
    keys_a = tmp_path / "a.keys"
    keys_b = tmp_path / "b.keys"
    keys_a.write_text(f"write {WRITE_A}\nread {READ_A}\n")
    keys_b.write_text(f"write {WRITE_B}\nread {READ_B}\n")
    server_a: ServerProcess = server_factory(tmp_path / "a.db", extra_args=["--keys-file", str(keys_a)]).start()
    server_b: ServerProcess = server_factory(tmp_path / "b.db", extra_args=["--keys-file", str(keys_b)]).start()
    cache_home = tmp_path / "cache"
    app_a = start_app(server_a.url, WRITE_A, cache_home)
    app_b = start_app(server_b.url, WRITE_B, cache_home)
    out_a, _ = app_a.communicate(timeout=120)
    out_b, _ = app_b.communicate(timeout=120)
    assert app_a.returncode == 0 and app_b.returncode == 0
    ids_a, ids_b = set(out_a.split()), set(out_b.split())
    assert len(ids_a) == len(ids_b) == 300
    for server, key, expected in ((server_a, READ_A, ids_a), (server_b, READ_B, ids_b)):
        server.wait_drained()
        stored = stored_ids_with_key(server, key)
        assert len(stored) == len(set(stored)), "stored twice"
        assert set(stored) == expected, f"{len(set(stored) - expected)} of the other app's events"


def stored_ids_with_key(server: ServerProcess, read_key: str) -> list[str]:
    import urllib.request

    ids: list[str] = []
    for page in range(1, 100):
        request = urllib.request.Request(
            f"{server.url}/view?page={page}&page_size=1000", headers={"Authorization": f"Bearer {read_key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = orjson.loads(response.read())
        ids += [event["id"] for event in body["events"]]
        if page >= body["total_pages"]:
            break
    return ids


def test_a_destination_is_the_server_url_and_the_write_key() -> None:
    spool_dir = Path("/spool")
    a = destination_dir(spool_dir, "http://a:8081", "k1")
    assert a == destination_dir(spool_dir, "http://a:8081/", "k1")  # the same server
    assert a.parent == spool_dir
    assert (
        len({a, destination_dir(spool_dir, "http://a:8081", "k2"), destination_dir(spool_dir, "http://b:8081", "k1")})
        == 3
    )
    assert "k1" not in a.name


def test_a_spool_of_the_earlier_layout_is_adopted_by_the_first_client_and_delivered(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    server = shared_server
    spool_dir = tmp_path / "spool"
    legacy = Spool(spool_dir / "queue")  # what the earlier version wrote
    events = [{"id": f"0190a5d6-0000-7000-8000-{n:012d}", "key": "old", "data": {"n": n}} for n in range(30)]
    legacy.append_many([orjson.dumps(events[:10]), orjson.dumps(events[10:])])
    legacy.close()
    with Client(Config(server_url=server.url, spool_dir=spool_dir, flush_period=0.1)) as client:
        assert client.flush(timeout=30) is True
    server.wait_drained()
    assert sorted(stored_since.ids()) == sorted(event["id"] for event in events)
    assert Spool(spool_dir / "queue").count() == 0
