"""Several ingest nodes on one PostgreSQL, as the README runs them: real `tlytics` processes
with `--store postgresql://…` and a spool each, against a real throwaway cluster.

What issue 11 asks of them: the same id posted to two nodes is stored once and every endpoint
answers the same on both; `kill -9` of one node mid-load, and PostgreSQL stopped (`-m
immediate`) mid-load and started again, lose and duplicate nothing that was acknowledged
(nodes keep acknowledging into their spools meanwhile, and /health says why nothing is
written); an erasure on one node also covers what another acknowledged before it.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Sender, ServerProcess, assert_exactly_once, event, eventually, http_json, kill_under_load
from tests.postgres_cluster import PostgresCluster, postgres_cluster, postgres_missing

__all__ = ["postgres_cluster"]  # the session fixture, used here by name


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database in the session's cluster (fsync off: no claim here survives a crash of
    PostgreSQL itself); its URL."""
    name = f"nodes_{uuid.uuid4().hex[:12]}"
    url = postgres_cluster.create_database(name)
    yield url
    postgres_cluster.drop_database(name)


@pytest.fixture
def durable_cluster() -> Iterator[PostgresCluster]:
    """A cluster of its own with fsync on, for the test that crashes PostgreSQL."""
    missing = postgres_missing()
    if missing is not None:
        pytest.skip(missing)
    cluster = PostgresCluster(fsync=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def start_node(
    server_factory: Any, tmp_path: Path, name: str, url: str, *, flush: str = "100ms", extra_args: tuple[str, ...] = ()
) -> ServerProcess:
    """The node `name`: its own spool under tmp_path/name (the same one on a restart)."""
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    # --db is what ServerProcess always passes; with --store it is not used.
    arguments = ["--store", url, "--spool", str(home / "spool"), *extra_args]
    server: ServerProcess = server_factory(home / "unused.db", flush=flush, extra_args=arguments)
    return server.start()


def get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return bytes(response.read())


def post_all(node: ServerProcess, events: list[dict[str, Any]], batch: int = 50) -> None:
    for start in range(0, len(events), batch):
        status, body = http_json("POST", node.url + "/events", events[start : start + batch])
        assert status == 200, body


def test_two_nodes_store_each_id_once_and_answer_the_same(server_factory: Any, tmp_path: Path, database: str) -> None:
    a = start_node(server_factory, tmp_path, "a", database)
    b = start_node(server_factory, tmp_path, "b", database)
    events = [
        event(n, key="signup" if n % 3 == 0 else "page_view", user=f"u{n % 7}", page=f"/p{n % 5}", seq=n)
        for n in range(300)
    ]
    post_all(a, events[:100])
    post_all(b, events[200:])
    # The middle hundred to both nodes at the same moment, and once more afterwards.
    both = [threading.Thread(target=post_all, args=(node, events[100:200], 10)) for node in (a, b)]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(timeout=60)
    post_all(a, events[150:250])
    for node in (a, b):
        node.wait_drained()
    expected = {e["id"] for e in events}
    for node in (a, b):
        stored = node.stored_ids()
        assert len(stored) == len(set(stored)) == 300 and set(stored) == expected
        status, health = http_json("GET", node.url + "/health")
        assert status == 200 and health["stored_events"] == 300 and health["problems"] == [], health
    window = "since=2025-01-01T00:00:00Z&until=2025-01-01T00:06:00Z"
    for path in (
        "/view?page_size=1000",
        "/view?page_size=7&page=3&key=signup",
        "/view?order=asc&page_size=20&where=data.user:u3",
        "/keys",
        f"/stats?interval=minute&{window}&unique=data.user&breakdown=data.page",
        f"/stats?interval=hour&{window}&key=page_view&where=data.seq:42",
        "/export?format=ndjson",
        "/export?format=csv&where=data.page:/p1",
    ):
        assert get_bytes(a.url + path) == get_bytes(b.url + path), path
    status, found = http_json("POST", b.url + "/lookup", {"ids": [events[0]["id"], str(uuid.uuid4())]})
    assert status == 200 and found["present"] == [events[0]["id"]]


def test_kill_9_of_one_node_mid_load_loses_and_duplicates_nothing(
    server_factory: Any, tmp_path: Path, database: str
) -> None:
    a = start_node(server_factory, tmp_path, "a", database)
    b = start_node(server_factory, tmp_path, "b", database)
    to_b = Sender(b.url, threads=2, batch_size=50).start().wait_acknowledged()
    # SIGKILL of a: its writer process dies with it, whatever it was doing.
    to_a = kill_under_load(a, 1.0, threads=2, batch_size=50)
    time.sleep(0.5)  # b goes on meanwhile
    to_b.stop()
    assert to_a.acknowledged and to_b.acknowledged
    restarted = start_node(server_factory, tmp_path, "a", database)  # the same spool
    b.wait_drained()
    assert_exactly_once(restarted, to_a.acknowledged | to_b.acknowledged, to_a.sent | to_b.sent)
    assert sorted(b.stored_ids()) == sorted(restarted.stored_ids())


def _store_problem(node: ServerProcess) -> dict[str, Any] | None:
    """The node's /health while it names a failing store (and still answers 200), else None."""
    status, health = http_json("GET", node.url + "/health")
    assert status == 200, health  # ingest still works: the node must stay in rotation
    return health if any("store is not taking writes" in p for p in health["problems"]) else None


def test_postgresql_stopped_mid_load_and_started_again(
    server_factory: Any, tmp_path: Path, durable_cluster: PostgresCluster
) -> None:
    url = durable_cluster.create_database("tlytics")
    # The nodes stay in rotation while PostgreSQL is down for less than --store-unhealthy-after:
    # long enough here for a busy machine (the default, 30s, is tested in test_store_reconnect).
    patient = ("--store-unhealthy-after", "10m")
    a = start_node(server_factory, tmp_path, "a", url, extra_args=patient)
    b = start_node(server_factory, tmp_path, "b", url, extra_args=patient)
    senders = [Sender(node.url, threads=2, batch_size=50).start().wait_acknowledged() for node in (a, b)]
    time.sleep(0.5)
    durable_cluster.stop("immediate")  # a crash of PostgreSQL: no checkpoint, no goodbye
    acknowledged_at_stop = sum(len(sender.acknowledged) for sender in senders)
    for node in (a, b):
        health = eventually(lambda node=node: _store_problem(node), timeout_s=30, what="/health naming the store")
        assert health["status"] == "healthy" and health["writer_last_error"], health
    # Both nodes go on acknowledging into their spools, and reads say "later", not "broken".
    eventually(
        lambda: sum(len(sender.acknowledged) for sender in senders) > acknowledged_at_stop + 400,
        timeout_s=30,
        what="acknowledgements while PostgreSQL is down",
    )
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(a.url + "/view", timeout=30)
    assert answered.value.code == 503 and answered.value.headers["Retry-After"]
    for sender in senders:
        sender.stop()
    durable_cluster.start()
    b.wait_drained(timeout_s=60)
    a.wait_drained(timeout_s=60)
    acknowledged = set().union(*(sender.acknowledged for sender in senders))
    sent = set().union(*(sender.sent for sender in senders))
    assert_exactly_once(a, acknowledged, sent)
    for node in (a, b):
        eventually(lambda node=node: _store_problem(node) is None, timeout_s=30, what="the problem cleared")


def test_an_erasure_on_one_node_covers_what_another_acknowledged_before_it(
    server_factory: Any, tmp_path: Path, database: str
) -> None:
    a = start_node(server_factory, tmp_path, "a", database)
    # b writes only on its way out: what it acknowledges waits in its spool meanwhile.
    b = start_node(server_factory, tmp_path, "b", database, flush="1h")
    before = [event(n, key="visit", user="u1" if n % 2 == 0 else "u2") for n in range(20)]
    post_all(b, before)
    status, health = http_json("GET", b.url + "/health")
    assert health["spool_entries"] > 0 and health["stored_events"] == 0, health
    status, erased = http_json("DELETE", a.url + "/events?where=data.user:u1")
    assert status == 200 and erased == {"deleted": 0}, erased  # nothing of u1 stored yet
    after = [event(100 + n, key="visit", user="u1") for n in range(5)]
    post_all(b, after)
    assert b.stop() == 0  # its final drain writes both lots now, after the erasure
    a.wait_drained()
    expected = {e["id"] for e in before if e["data"]["user"] == "u2"} | {e["id"] for e in after}
    stored = a.stored_ids()
    assert len(stored) == len(set(stored)) and set(stored) == expected
    status, health = http_json("GET", a.url + "/health")
    assert health["stored_events"] == len(expected)
    # Replaying what was erased stores nothing; what was acknowledged after it stays.
    post_all(a, before + after)
    a.wait_drained()
    assert set(a.stored_ids()) == expected
