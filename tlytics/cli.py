"""The `tlytics` command: parse flags (each with a TLYTICS_* environment variable; the flag
wins), configure logging, and run the server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tlytics.errors import TlyticsError
from tlytics.options import read_environment

# `pip install tlytics` is the client library only; the server's packages (aiohttp, APSW,
# msgspec, structlog…) come with the `server` extra. Without them the command says so in one
# line instead of a traceback (see main); a missing module of our own is a bug and raises.
SERVER_EXTRA_MISSING = "the tlytics server needs the server extra: pip install 'tlytics[server]'"
try:
    import structlog
    from aiohttp import web

    import tlytics.setting_values as setting_values
    from tlytics.ingest import Settings, create_app
    from tlytics.ingest.event_loop import new_event_loop
    from tlytics.ingest.settings import operator_options
    from tlytics.ingest.supervisor import run_supervisor
    from tlytics.logs import configure_logging
except ImportError as exc:
    if (exc.name or "tlytics").partition(".")[0] == "tlytics":
        raise
    _missing_server_module: str | None = exc.name
else:
    _missing_server_module = None


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` for argparse, which shows an ArgumentTypeError's text as it is but turns a
    ValueError into "invalid <name> value: '<text>'" (that would echo an API key)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def build_parser() -> argparse.ArgumentParser:
    """Flags generated from the declarations on `Settings`. A flag that is absent leaves no
    attribute (SUPPRESS), so the environment or the field's default applies."""
    parser = argparse.ArgumentParser(
        prog="tlytics",
        description="Tlytics analytics event server. Every flag can also be set by the"
        " environment variable named in its help; the flag wins.",
        argument_default=argparse.SUPPRESS,
    )
    for name, option in operator_options():
        if option.flag is None:  # set by its environment variable only
            continue
        # A yes/no setting's flag alone means yes (`--start-without-store`).
        is_switch = option.parse is setting_values.switch
        parser.add_argument(
            option.flag,
            dest=name,
            metavar=option.flag.lstrip("-").upper().replace("-", "_"),
            type=_argparse_type(option.parse),
            action="append" if option.repeatable else "store",
            nargs="?" if is_switch else None,
            const=True if is_switch else None,
            help=f"{option.help} (default: {option.default_text}) [{option.environment_variable}]",
        )
    return parser


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[Settings, str]:
    """Build Settings from flags and environment (the flag wins); exits with status 2 and a
    clear message on a bad value. Returns the settings and the log level."""
    parser = build_parser()
    values: dict[str, Any] = {}
    # Every variable that is set is checked, even one a flag overrides: a bad value in the
    # environment never goes unnoticed.
    for name, option in operator_options():
        try:
            found = read_environment(option, environ, blank_is_unset=False)
        except ValueError as exc:  # names the variable, and the value unless it is a secret
            parser.error(str(exc))
        if found is None:
            continue
        if found.deprecation is not None:
            # Before logging is configured: the operator sees it on stderr whatever the level.
            sys.stderr.write(f"tlytics: warning: {found.deprecation}\n")
        values[name] = found.value
    flags = vars(parser.parse_args(list(argv)))
    values.update({name: tuple(value) if isinstance(value, list) else value for name, value in flags.items()})
    settings = Settings(**values)
    return settings, settings.log_level


def _bound_port(banner: str, requested: int) -> int:
    """The port in aiohttp's "Running on http://host:port" line, else `requested`."""
    found = re.search(r"Running on \S*:(\d+)\s", banner)
    return int(found[1]) if found else requested


def main(argv: Sequence[str] | None = None) -> None:
    if _missing_server_module is not None:
        sys.stderr.write(f"tlytics: {SERVER_EXTRA_MISSING} (no module named {_missing_server_module!r})\n")
        sys.exit(1)
    settings, log_level = parse_settings(sys.argv[1:] if argv is None else argv, dict(os.environ))
    configure_logging(log_level)
    log = structlog.get_logger("tlytics")
    # Built before anything starts, with --workers too (each worker builds its own): a bad
    # keys file stops the start here, as it always did.
    app = create_app(settings)

    def announce(port: int) -> None:
        log.info(
            "listening",
            host=settings.host,
            port=port,
            store=settings.store_description,
            spool=str(settings.resolved_spool_dir),
            spool_sync=settings.spool_sync,
            flush_period_s=settings.flush_period_s,
            workers=settings.workers,
        )

    try:
        if settings.workers > 1:
            # N ingest processes on the port, one writer for all (tlytics.ingest.supervisor).
            run_supervisor(settings, loop=new_event_loop(), on_listening=announce)
        else:
            _run_app(app, settings, announce)
    except (TlyticsError, OSError) as exc:  # the store in use, the port taken, a bad path
        log.error("cannot_start", error=str(exc))
        sys.stderr.write(f"tlytics: {exc}\n")
        sys.exit(1)
    log.info("stopped")


def _run_app(app: web.Application, settings: Settings, announce: Callable[[int], None]) -> None:
    """One process: the application, its writer in a process (or thread) of its own."""
    # aiohttp handles SIGINT/SIGTERM: stop accepting, let in-flight requests finish, then run
    # the cleanup contexts (committer, then writer's final drain, then store and spool).
    # Its `print` is called once the server listens: so the `listening` line comes only then,
    # and names the port bound (with --port 0, the one the system chose; tests start so).
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=lambda banner: announce(_bound_port(banner, settings.port)),
        shutdown_timeout=30.0,
        loop=new_event_loop(),
    )
