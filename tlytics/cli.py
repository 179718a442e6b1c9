"""The `tlytics` command: parse flags (each with a TLYTICS_* environment variable; the flag
wins), configure logging, and run the server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import re
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from tlytics.errors import TlyticsError
from tlytics.ingest import Settings, create_app
from tlytics.ingest.settings import DEFAULT_BODY_TIMEOUT_S, DEFAULT_DB, DEFAULT_FLUSH_PERIOD_S, DEFAULT_HOST, DEFAULT_PORT
from tlytics.logs import configure_logging
from tlytics.timefmt import parse_duration_s

# flag → environment variable; also read by the Docker consistency test.
ENVIRONMENT_VARIABLES = {
    "--host": "TLYTICS_HOST",
    "--port": "TLYTICS_PORT",
    "--db": "TLYTICS_DB",
    "--spool": "TLYTICS_SPOOL",
    "--spool-sync": "TLYTICS_SPOOL_SYNC",
    "--flush": "TLYTICS_FLUSH",
    "--log-level": "TLYTICS_LOG_LEVEL",
    "--writer": "TLYTICS_WRITER",
    "--max-body": "TLYTICS_MAX_BODY",
    "--max-events": "TLYTICS_MAX_EVENTS",
    "--max-event-size": "TLYTICS_MAX_EVENT_SIZE",
    "--body-timeout": "TLYTICS_BODY_TIMEOUT",
    "--spool-max": "TLYTICS_SPOOL_MAX",
    "--spool-min-free": "TLYTICS_SPOOL_MIN_FREE",
    "--retention": "TLYTICS_RETENTION",
    "--write-key": "TLYTICS_WRITE_KEYS",
    "--read-key": "TLYTICS_READ_KEYS",
}
# Repeatable flags whose environment variable is a comma-separated list.
LIST_FLAGS = {"--write-key", "--read-key"}


# argparse shows an ArgumentTypeError's text as it is; other errors become "invalid <name> value".
def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def _duration(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _body_timeout(text: str) -> float:
    seconds = _duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0: {text!r}")
    return seconds


def _writer(text: str) -> str:
    if text not in ("process", "thread"):
        raise argparse.ArgumentTypeError(f"must be process or thread, not {text!r}")
    return text


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _size(text: str) -> int:
    """Bytes: 1048576, 10MiB, 1GiB, 500kB."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if match is None or match[2].lower() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1048576, 10MiB, 1GiB)")
    value = int(match[1]) * _SIZE_UNITS[match[2].lower()]
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _key(text: str) -> str:
    if len(text) < 16 or any(c.isspace() or c == "," for c in text):
        raise argparse.ArgumentTypeError("an API key needs 16+ characters, without spaces or commas")
    return text


def _sync(text: str) -> str:
    if text not in ("normal", "full"):
        raise argparse.ArgumentTypeError(f"must be normal or full, not {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlytics",
        description="Tlytics analytics event server. Every flag can also be set by the"
        " environment variable named in its help; the flag wins.",
    )

    def add(flag: str, kind: Callable[[str], Any], default: Any, help_text: str, **extra: Any) -> None:
        parser.add_argument(
            flag, type=kind, default=default, help=f"{help_text} [{ENVIRONMENT_VARIABLES[flag]}]", **extra
        )

    add("--host", str, DEFAULT_HOST, f"address to listen on (default {DEFAULT_HOST})")
    add("--port", _port, DEFAULT_PORT, f"port to listen on (default {DEFAULT_PORT})")
    add("--db", Path, Path(DEFAULT_DB), f"SQLite database file (default {DEFAULT_DB})")
    add("--spool", Path, None, "spool directory (default: <db>.spool)")
    add(
        "--spool-sync",
        _sync,
        "normal",
        "spool durability: normal survives a process crash, full also a power loss"
        " (default normal)",
    )
    add("--flush", _duration, DEFAULT_FLUSH_PERIOD_S, "writer flush period, e.g. 500ms, 5s, 1m (default 5s)")
    add("--log-level", str, "info", "debug, info, warning or error (default info)")
    add(
        "--writer",
        _writer,
        "process",
        "where the writer's SQLite work runs: process (its own process, the second core) or"
        " thread (default process)",
    )
    add("--max-body", _size, 10 * 1024**2, "largest request body, after gzip decompression (default 10MiB)")
    add("--max-events", _count, 10_000, "most events in one request (default 10000)")
    add("--max-event-size", _size, 1024**2, "largest encoded event (default 1MiB)")
    add(
        "--body-timeout",
        _body_timeout,
        DEFAULT_BODY_TIMEOUT_S,
        f"time for a request body to arrive; a slower client is dropped (default {DEFAULT_BODY_TIMEOUT_S:g}s)",
    )
    add("--spool-max", _size, 1024**3, "spool size at which requests get 503 + Retry-After (default 1GiB)")
    add("--spool-min-free", _size, 64 * 1024**2, "free disk kept in reserve; below it requests get 503 (default 64MiB)")
    add("--retention", _duration, None, "delete events older than this, e.g. 90d (default: keep all)")
    add("--write-key", _key, None, "API key for POST /events and /batch; repeatable (env: comma-separated)", action="append")
    add("--read-key", _key, None, "API key for /view and other reads; repeatable (env: comma-separated)", action="append")
    return parser


def parse_settings(argv: Sequence[str], environ: dict[str, str]) -> tuple[Settings, str]:
    """Build Settings from flags and environment; exits with a clear message on bad values."""
    parser = build_parser()
    defaults: dict[str, Any] = {}
    for action in parser._actions:
        flag = next((o for o in action.option_strings if o in ENVIRONMENT_VARIABLES), None)
        if flag is None:
            continue
        variable = ENVIRONMENT_VARIABLES[flag]
        if variable in environ:
            kind = action.type if callable(action.type) else str
            try:
                if flag in LIST_FLAGS:
                    defaults[action.dest] = [kind(v.strip()) for v in environ[variable].split(",") if v.strip()]
                else:
                    defaults[action.dest] = kind(environ[variable])
            except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                # Never echo a key back: the value may be a secret.
                shown = "…" if flag in LIST_FLAGS else repr(environ[variable])
                parser.error(f"environment variable {variable}={shown}: {exc}")
    # A repeatable flag's default would be appended to, not replaced: apply those afterwards.
    list_defaults = {dest: defaults.pop(dest) for dest in ("write_key", "read_key") if dest in defaults}
    parser.set_defaults(**defaults)
    args = parser.parse_args(list(argv))
    for dest, value in list_defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    settings = Settings(
        host=args.host,
        port=args.port,
        db_path=args.db,
        spool_dir=args.spool,
        spool_sync=args.spool_sync,
        flush_period_s=args.flush,
        writer_process=args.writer == "process",
        log_level=str(args.log_level),
        max_body_bytes=args.max_body,
        max_events_per_request=args.max_events,
        max_event_bytes=args.max_event_size,
        body_timeout_s=args.body_timeout,
        spool_max_bytes=args.spool_max,
        spool_min_free_bytes=args.spool_min_free,
        retention_s=args.retention or None,
        write_keys=tuple(args.write_key or ()),
        read_keys=tuple(args.read_key or ()),
    )
    return settings, str(args.log_level)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (it is a dependency on Linux and macOS): a faster loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: Sequence[str] | None = None) -> None:
    settings, log_level = parse_settings(sys.argv[1:] if argv is None else argv, dict(os.environ))
    configure_logging(log_level)
    log = structlog.get_logger("tlytics")
    app = create_app(settings)

    async def announce(_: web.Application) -> None:
        log.info(
            "listening",
            host=settings.host,
            port=settings.port,
            db=str(settings.db_path),
            spool=str(settings.resolved_spool_dir),
            spool_sync=settings.spool_sync,
            flush_period_s=settings.flush_period_s,
        )

    app.on_startup.append(announce)
    # aiohttp handles SIGINT/SIGTERM: stop accepting, let in-flight requests finish, then run
    # the cleanup contexts (committer, then writer's final drain, then store and spool).
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=None,
            shutdown_timeout=30.0,
            loop=_new_event_loop(),
        )
    except (TlyticsError, OSError) as exc:  # the store in use, the port taken, a bad path
        log.error("cannot_start", error=str(exc))
        sys.stderr.write(f"tlytics: {exc}\n")
        sys.exit(1)
    log.info("stopped")
