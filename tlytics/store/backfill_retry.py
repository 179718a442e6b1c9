"""The declared properties' backfills (SQLite and PostgreSQL) run on a thread of their own and
must outlive a passing failure: the store locked by another process past the busy timeout,
PostgreSQL restarted, a full disk. A failed attempt is logged and tried again after a pause
that doubles up to RETRY_MAX_S, from where its last committed chunk left off; until the
backfill is done, the property's reads go on parsing the JSON, slow but exact."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("tlytics.store")

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


def run_until_done(attempt: Callable[[], None], stop: threading.Event) -> None:
    """`attempt()` until it returns without an error, or `stop` is set."""
    delay = RETRY_FIRST_S
    while not stop.is_set():
        try:
            attempt()
            return
        except Exception as exc:  # a thread's error would vanish: logged, and tried again
            log.error("property_backfill_failed", error=str(exc), retry_in_s=delay)
        stop.wait(delay)
        delay = min(delay * 2, RETRY_MAX_S)
