"""uWSGI without Python threads: detect it, so the client can work without its threads.

uWSGI does not initialise Python's thread support unless told to (`enable-threads`, or
`threads` which implies it): threads an application starts then never run, so the sender
would never send and the spooler never spool. Under such a uWSGI the client writes each event
to disk at `emit()` (as `spool_interval=0` does) and sends on `flush()`/`close()` (and the
bounded flush at exit) in the caller's thread.

uWSGI puts a `uwsgi` module in the interpreter it embeds; importing it is the documented way
to know you run under uWSGI. Its `opt` holds the options as given (bytes, or True for a bare
flag).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

log = logging.getLogger("tlytics.client")

_warned = False


def _enabled(options: Any, name: str) -> bool:
    value = options.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, list):  # an option given several times
        value = value[-1] if value else None
    if isinstance(value, str):
        text = value.strip().lower()
        # "threads = 4" counts as on, "threads = 0" or "enable-threads = false" does not.
        return text in ("true", "yes", "on") or (text.isdigit() and int(text) > 0)
    return bool(value)


def threads_unavailable() -> bool:
    """True when running under uWSGI with Python threads disabled (no enable-threads, no
    threads); warns once per process the first time it finds so."""
    global _warned
    try:
        uwsgi = importlib.import_module("uwsgi")  # exists only inside uWSGI
    except ImportError:
        return False
    options = getattr(uwsgi, "opt", None)
    if options is None or _enabled(options, "enable-threads") or _enabled(options, "threads"):
        return False
    if not _warned:
        _warned = True
        log.warning(
            "uWSGI runs without Python threads (no enable-threads): the tlytics client writes each"
            " event to disk at emit() and sends only on flush()/close() and at exit;"
            " set enable-threads = true to send in the background"
        )
    return True
