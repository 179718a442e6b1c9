"""What flush() and close() promise (issue 18, items 5, 7 and 10): True only when every event
this process knows of was acknowledged; a flush() in a process that does not hold the sender
lease is served at once by the process that does; and an emit() after close() is refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, fast_config
from tests.shared_server import StoredSince
from tlytics import Client
from tlytics.errors import ClientClosed, EventsDropped, TlyticsError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("first_call", ["flush", "close"])
@pytest.mark.parametrize("kept_in_memory", [0, 3])
def test_flush_and_close_are_false_when_the_spool_cannot_open_and_events_were_dropped(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path, kept_in_memory: int, first_call: str
) -> None:
    """The spool_dir cannot be made (a file is in the way): events wait in memory up to
    max_memory_events and the rest are dropped. flush() and close() said True when none
    were kept (nothing left in memory, nothing on disk). (Like dead-lettered events, drops
    make the first flush() or close() after them False.)"""
    server = shared_server
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    errors: list[TlyticsError] = []
    client = Client(
        fast_config(server.url, blocker / "spool", max_memory_events=kept_in_memory, on_error=errors.append)
    )
    for n in range(10):
        client.emit("lost", {"n": n})
    assert client.dropped == 10 - kept_in_memory
    assert getattr(client, first_call)(timeout=2) is False
    if kept_in_memory:  # still waiting in memory: not acknowledged either
        assert client.close(timeout=2) is False
    assert sum(e.count for e in errors if isinstance(e, EventsDropped)) >= 10 - kept_in_memory
    server.wait_drained()
    assert stored_since.ids() == []


def test_close_after_a_clean_flush_is_true_and_a_second_close_says_the_same(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    server = shared_server
    client = Client(fast_config(server.url, tmp_path / "spool"))
    client.emit("one")
    assert client.flush(timeout=30) is True
    assert client.close(timeout=30) is True
    assert client.close(timeout=30) is True


def test_emit_after_close_raises_client_closed(shared_server: ServerProcess, tmp_path: Path) -> None:
    server = shared_server
    client = Client(fast_config(server.url, tmp_path / "spool"))
    client.emit("before")
    assert client.close(timeout=30)
    with pytest.raises(ClientClosed, match="closed"):
        client.emit("after")
    with pytest.raises(ClientClosed):
        client.emit_and_send("after")
    assert issubclass(ClientClosed, TlyticsError)


HOLDER = """
import sys
from tlytics import Client, Config
client = Client(Config(server_url=sys.argv[1], spool_dir=sys.argv[2], flush_period=600))
client.emit("holder_event")
assert client.flush(timeout=30)  # its sender holds the lease from now on
print("ready", flush=True)
sys.stdin.read()  # idle until the test is done
client.close(timeout=5)
"""


def test_flush_in_a_process_without_the_lease_wakes_the_process_that_sends(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    """The holder sends every flush_period (here 10 minutes): a flush() elsewhere waited for
    it, and returned False at its deadline."""
    server = shared_server
    spool = tmp_path / "spool"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), server.url, str(spool)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        client = Client(fast_config(server.url, spool, flush_period=600))
        ids = [client.emit("flushed_elsewhere", {"n": n}) for n in range(100)]
        started = time.monotonic()
        assert client.flush(timeout=20) is True
        assert time.monotonic() - started < 15
        client.close(timeout=5)
    finally:
        holder.communicate("", timeout=30)
    server.wait_drained()
    assert set(ids) <= set(server.stored_ids())
