"""The client in the processes applications run in: asyncio apps (aflush/aclose), scripts and
containers that just exit (the bounded flush at exit), Celery prefork children that leave
through os._exit, and uWSGI without Python threads."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from tests.fake_server import FakeServer
from tests.helpers import ServerProcess, free_port
from tests.shared_server import StoredSince
from tlytics import Client, Config
from tlytics.client import uwsgi as uwsgi_support
from tlytics.spool import Spool

ROOT = Path(__file__).resolve().parent.parent


def run_script(code: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture
def server(shared_server: ServerProcess) -> ServerProcess:
    """The run's shared server, for the tests that only need one running: each asserts on the
    ids stored since it began (`stored`), not on totals."""
    return shared_server


@pytest.fixture
def stored(stored_since: StoredSince) -> StoredSince:
    return stored_since


def spooled_ids(spool_dir: Path) -> list[str]:
    """Every event id waiting in a client spool_dir, whatever its destinations."""
    import orjson

    ids: list[str] = []
    for queue in sorted(spool_dir.glob("to-*/queue")):
        spool = Spool(queue)
        try:
            ids += [event["id"] for _, value in spool.peek(1_000_000) for event in orjson.loads(value)]
        finally:
            spool.close()
    return ids


async def test_aflush_and_aclose_run_off_the_event_loop(
    server: ServerProcess, stored: StoredSince, tmp_path: Path
) -> None:
    client = Client(Config(server_url=server.url, spool_dir=tmp_path / "spool", flush_period=60))
    ids = {client.emit("page_view", {"n": n}) for n in range(100)}
    loop_ran = threading.Event()
    flush_threads: list[threading.Thread] = []
    real_flush = client.flush

    def flush_needing_the_loop(timeout: float = 10.0) -> bool:
        # Returns only once a coroutine on the loop has run: a flush that blocked the loop
        # would wait here for nothing and report it.
        flush_threads.append(threading.current_thread())
        assert loop_ran.wait(30), "the event loop did not run while flush() was waiting"
        return real_flush(timeout)

    client.flush = flush_needing_the_loop  # type: ignore[method-assign]

    async def on_the_loop() -> None:
        loop_ran.set()

    ticker = asyncio.get_running_loop().create_task(on_the_loop())
    assert await client.aflush(timeout=30) is True
    await ticker
    assert flush_threads and flush_threads[0] is not threading.main_thread()
    extra = client.emit("page_view", {"n": "last"})
    assert await client.aclose(timeout=30) is True
    server.wait_drained()
    assert sorted(stored.ids()) == sorted(ids | {extra})


def test_a_script_that_exits_without_close_delivers_at_exit(
    server: ServerProcess, stored: StoredSince, tmp_path: Path
) -> None:
    # Long periods: nothing leaves in the background, only the flush at exit can deliver.
    result = run_script(
        f"""
        from tlytics import Client, Config
        client = Client(Config(server_url={server.url!r}, spool_dir={str(tmp_path / "spool")!r},
                               flush_period=600, spool_interval=600, flush_at_exit=30))
        print(" ".join(client.emit("job_done", {{"n": n}}) for n in range(200)))
        """
    )
    assert result.returncode == 0, result.stderr
    sent = result.stdout.split()
    assert len(sent) == 200
    server.wait_drained()
    assert sorted(stored.ids()) == sorted(sent)
    assert spooled_ids(tmp_path / "spool") == []


def test_flush_at_exit_zero_only_writes_memory_to_disk(
    server: ServerProcess, stored: StoredSince, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    result = run_script(
        f"""
        from tlytics import Client, Config
        client = Client(Config(server_url={server.url!r}, spool_dir={str(spool)!r},
                               flush_period=600, spool_interval=600, flush_at_exit=0))
        print(" ".join(client.emit("job_done", {{"n": n}}) for n in range(20)))
        """
    )
    assert result.returncode == 0, result.stderr
    assert sorted(spooled_ids(spool)) == sorted(result.stdout.split())
    server.wait_drained()
    assert stored.ids() == []


@pytest.mark.parametrize("server_kind", ["refusing", "hanging"])
def test_exit_flush_is_bounded_and_leaves_the_rest_for_the_next_run(
    server_kind: str, server_factory: Any, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hanging = FakeServer(hang=True, port=port).start() if server_kind == "hanging" else None
    spool = tmp_path / "spool"
    # A request timeout of 10 minutes: only the 1 s flush_at_exit bound lets the script end
    # within the subprocess timeout below.
    result = run_script(
        f"""
        from tlytics import Client, Config
        client = Client(Config(server_url={url!r}, spool_dir={str(spool)!r}, timeout=600,
                               flush_period=600, flush_at_exit=1))
        print(" ".join(client.emit("job_done", {{"n": n}}) for n in range(50)))
        """,
        timeout_s=120,
    )
    if hanging is not None:
        hanging.stop()
    assert result.returncode == 0, result.stderr
    sent = result.stdout.split()
    assert sorted(spooled_ids(spool)) == sorted(sent)
    # The next run, with a server there (where the events were meant to go), delivers them.
    server = server_factory()
    server.port, server.url = port, url
    server.start()
    with Client(Config(server_url=server.url, spool_dir=spool, flush_at_exit=0)) as client:
        assert client.flush(timeout=30) is True
    server.wait_drained()
    assert sorted(server.stored_ids()) == sorted(sent)


def test_celery_worker_process_shutdown_delivers_before_os_exit(
    server: ServerProcess, stored: StoredSince, tmp_path: Path
) -> None:
    # A prefork child: Celery sends worker_process_shutdown, then leaves through os._exit(),
    # which skips atexit. The signals are stand-ins with Celery's connect/send.
    result = run_script(
        f"""
        import os, sys
        from tlytics import Client, Config
        from tlytics.client import celery as tlytics_celery

        class Signal:
            def __init__(self):
                self.receivers = []
            def connect(self, receiver, weak=True, dispatch_uid=None):
                self.receivers.append(receiver)
            def send(self, sender=None, **named):
                return [(r, r(signal=self, sender=sender, **named)) for r in self.receivers]

        class signals:
            worker_process_shutdown = Signal()
            worker_shutdown = Signal()

        client = Client(Config(server_url={server.url!r}, spool_dir={str(tmp_path / "spool")!r},
                               flush_period=600, spool_interval=600, flush_at_exit=0))
        tlytics_celery.install(client, timeout=30, signals=signals)
        print(" ".join(client.emit("task_done", {{"n": n}}) for n in range(30)))
        sys.stdout.flush()
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
        os._exit(0)
        """
    )
    assert result.returncode == 0, result.stderr
    sent = result.stdout.split()
    assert len(sent) == 30
    server.wait_drained()
    assert sorted(stored.ids()) == sorted(sent)


def fake_uwsgi(**options: Any) -> types.ModuleType:
    module = types.ModuleType("uwsgi")
    module.opt = options  # type: ignore[attr-defined]
    return module


def tlytics_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tlytics-")}


def test_uwsgi_without_threads_spools_at_emit_and_sends_on_flush(
    server: ServerProcess,
    stored: StoredSince,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(uwsgi_support, "_warned", False)
    monkeypatch.setitem(sys.modules, "uwsgi", fake_uwsgi(master=True, processes=b"4", **{"lazy-apps": b"1"}))
    threads_before = tlytics_threads()
    with caplog.at_level(logging.WARNING, logger="tlytics.client"):
        client = Client(Config(server_url=server.url, spool_dir=tmp_path / "a", spool_interval=0.05))
        ids = [client.emit("page_view", {"n": n}) for n in range(20)]
        second = Client(Config(server_url=server.url, spool_dir=tmp_path / "b"))
        second_id = second.emit("page_view", {"n": "b"})
    assert not tlytics_threads() - threads_before  # threads would never run under this uWSGI
    assert sorted(spooled_ids(tmp_path / "a")) == sorted(ids)  # on disk at emit, not in memory
    assert len([r for r in caplog.records if "uWSGI" in r.getMessage()]) == 1
    assert client.flush(timeout=30) is True
    assert second.close(timeout=30) is True
    assert client.close(timeout=30) is True
    server.wait_drained()
    assert sorted(stored.ids()) == sorted([*ids, second_id])


def test_uwsgi_with_enable_threads_sends_in_the_background(
    server: ServerProcess, stored: StoredSince, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uwsgi_support, "_warned", False)
    monkeypatch.setitem(sys.modules, "uwsgi", fake_uwsgi(**{"enable-threads": True}))
    threads_before = tlytics_threads()
    client = Client(Config(server_url=server.url, spool_dir=tmp_path / "spool", flush_period=0.1))
    event_id = client.emit("page_view")
    assert "tlytics-sender" in {t.name for t in tlytics_threads() - threads_before}
    assert client.close(timeout=30) is True
    server.wait_drained()
    assert stored.ids() == [event_id]


def test_a_child_forked_without_python_s_fork_hooks_makes_its_own_ids(tmp_path: Path) -> None:
    # uWSGI forks its workers in C: Python's at-fork hooks do not run (unless
    # py-call-uwsgi-fork-hooks). libc's fork() through ctypes does the same here. The clock is
    # frozen so that parent and child would draw the very same ids from an inherited state.
    out = tmp_path / "child-ids"
    result = run_script(
        f"""
        import ctypes, os, time
        from tlytics import Client, Config

        time.time_ns = lambda: 1_767_225_600_000_000_000
        client = Client(Config(disabled=True))
        client.emit("before_fork")
        pid = ctypes.CDLL(None).fork()
        ids = [client.emit("after_fork") for _ in range(100)]
        if pid == 0:
            with open({str(out)!r}, "w") as f:
                f.write(" ".join(ids))
            os._exit(0)
        os.waitpid(pid, 0)
        print(" ".join(ids))
        """
    )
    assert result.returncode == 0, result.stderr
    parent_ids = set(result.stdout.split())
    child_ids = set(out.read_text().split())
    assert len(parent_ids) == len(child_ids) == 100
    assert not parent_ids & child_ids
