"""A multiprocessing application for the client tests: `python -m tests.client_multiprocessing
URL SPOOL OUT START_METHOD KIND`. The parent makes a client and emits one event; then four
children (Process or Pool workers, started with `fork` or `spawn`) each emit EVENTS events and
return at once, without flush() or close(). Every id emitted is written to a file in OUT, so
the test knows exactly what each process believes it emitted."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

from tlytics import Client, Config

CHILDREN = 4
EVENTS = 1_000

_client: Client | None = None


def client_for(url: str, spool: str) -> Client:
    """This process's client: under fork, the parent's, inherited; under spawn, a new one."""
    global _client
    if _client is None:
        _client = Client(Config(server_url=url, spool_dir=spool, flush_period=0.2))
    return _client


def emit_events(url: str, spool: str, out: str, n: int) -> int:
    client = client_for(url, spool)
    ids = [client.emit("child_event", {"child": n, "i": i}) for i in range(EVENTS)]
    Path(out, f"child-{n}-{os.getpid()}.ids").write_text("\n".join(ids))
    return len(ids)  # and return at once: the process leaves right after


def _emit_task(args: tuple[str, str, str, int]) -> int:
    return emit_events(*args)


def main() -> None:
    url, spool, out, start_method, kind = sys.argv[1:6]
    parent = client_for(url, spool)
    Path(out, "parent.ids").write_text(parent.emit("parent_event", {"pid": os.getpid()}))
    context = multiprocessing.get_context(start_method)
    if kind == "process":
        processes = [context.Process(target=emit_events, args=(url, spool, out, n)) for n in range(CHILDREN)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
        codes = [process.exitcode for process in processes]
        assert codes == [0] * CHILDREN, codes
    else:
        pool = context.Pool(CHILDREN)
        assert sum(pool.map(_emit_task, [(url, spool, out, n) for n in range(CHILDREN)])) == CHILDREN * EVENTS
        pool.close()  # workers leave after their last task, as a Pool's workers do
        pool.join()
    parent.close(timeout=30)


if __name__ == "__main__":
    main()
