"""The client under threads (issue 18, item 1): emit() from several threads while another
calls emit_and_send() loses nothing, and each emit_and_send() returns its own event's id.
emit_and_send() once swapped the shared buffer for an empty one without a lock, while other
threads appended to it: about a fifth of their events vanished, and flush() said True."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.helpers import ServerProcess, fast_config
from tests.shared_server import StoredSince
from tlytics import Client

EMITTING_THREADS = 4
EMITS_PER_THREAD = 2_000
SENDS = 100


def test_emit_in_threads_beside_emit_and_send_loses_nothing_and_ids_are_each_call_s_own(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    server = shared_server
    client = Client(fast_config(server.url, tmp_path / "spool", timeout=10.0))
    emitted: list[list[str]] = [[] for _ in range(EMITTING_THREADS)]
    sent: dict[str, int] = {}
    start = threading.Barrier(EMITTING_THREADS + 1)

    def emit_loop(n: int) -> None:
        start.wait()
        emitted[n].extend(client.emit("page_view", {"thread": n, "i": i}) for i in range(EMITS_PER_THREAD))

    def send_loop() -> None:
        start.wait()
        for i in range(SENDS):
            sent[client.emit_and_send("payment", {"i": i})] = i

    threads = [threading.Thread(target=emit_loop, args=(n,)) for n in range(EMITTING_THREADS)]
    threads.append(threading.Thread(target=send_loop))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert client.flush(timeout=60) is True
    finally:
        client.close(timeout=5)
    server.wait_drained()
    stored = {event["id"]: event for event in stored_since.events()}
    expected = {event_id for ids in emitted for event_id in ids} | set(sent)
    assert len(expected) == EMITTING_THREADS * EMITS_PER_THREAD + SENDS
    assert set(stored) == expected, f"{len(expected - set(stored))} events lost"
    for event_id, i in sent.items():
        assert (stored[event_id]["key"], stored[event_id]["data"]) == ("payment", {"i": i})
