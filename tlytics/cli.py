"""The `tlytics` command: parse flags (each with a TLYTICS_* environment variable; the flag
wins), configure logging, and run the server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from tlytics.ingest import Settings, create_app
from tlytics.ingest.settings import DEFAULT_DB, DEFAULT_FLUSH_PERIOD_S, DEFAULT_HOST, DEFAULT_PORT
from tlytics.logs import configure_logging
from tlytics.timefmt import parse_duration_s

SWITCH_INTERVAL_S = 0.0005

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
}


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


def _writer(text: str) -> str:
    if text not in ("process", "thread"):
        raise argparse.ArgumentTypeError(f"must be process or thread, not {text!r}")
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
                defaults[action.dest] = kind(environ[variable])
            except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                parser.error(f"environment variable {variable}={environ[variable]!r}: {exc}")
    parser.set_defaults(**defaults)
    args = parser.parse_args(list(argv))
    settings = Settings(
        host=args.host,
        port=args.port,
        db_path=args.db,
        spool_dir=args.spool,
        spool_sync=args.spool_sync,
        flush_period_s=args.flush,
        writer_process=args.writer == "process",
        log_level=str(args.log_level),
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
    # The spool thread needs the GIL back right after each group commit to release its
    # waiters; with the default 5 ms switch interval it waited behind the busy event loop and
    # group commits were capped near 100/s. 0.5 ms keeps that hand-off short.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
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
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=30.0,
        loop=_new_event_loop(),
    )
    log.info("stopped")
