"""Logging set-up: structlog configured once, JSON lines when stdout is not a terminal (so log
shippers can parse them; tracebacks as dicts, serialized by orjson), a readable console
renderer when a person is watching. Every line names its logger (`structlog.get_logger(name)`)
and carries the context bound with `structlog.contextvars` (the request id, for one).

The request log line is on by default, so its cost is on every request's path: level, logger
name and timestamp are added by one processor (the time text is rebuilt once a second, not per
line), and lines logged in an event loop are written together once per loop iteration, one
write for all the requests answered in it instead of a write and a flush per line.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import sys
import threading
import time
from typing import IO, Any

import orjson
import structlog

# structlog's level names for the methods that are spelt otherwise (see add_log_level).
_LEVEL_OF_METHOD = {"warn": "warning", "exception": "error", "msg": "info", "log": "info"}


class _Timestamps:
    """ISO 8601 UTC timestamps with microseconds ("2026-11-28T02:15:03.123456Z"), the date and
    time part formatted once per second: a datetime per line cost a quarter of the line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        nanoseconds = time.time_ns()
        second, rest = divmod(nanoseconds, 1_000_000_000)
        if second != self._second:
            # Two threads may both rebuild it at a new second: they write the same text.
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{rest // 1000:06d}Z"


_timestamps = _Timestamps()
_CONTEXT_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX


def merge_context(logger: Any, method_name: str, event_dict: Any) -> Any:
    """structlog's merge_contextvars, reading each context variable once (items(), not a
    lookup per name): the same keys, the call's own taking precedence."""
    prefix_length = len(_CONTEXT_PREFIX)
    for variable, value in contextvars.copy_context().items():
        if value is not Ellipsis and variable.name.startswith(_CONTEXT_PREFIX):
            event_dict.setdefault(variable.name[prefix_length:], value)
    return event_dict


def add_level_logger_and_time(logger: Any, method_name: str, event_dict: Any) -> Any:
    """structlog's add_log_level, add_logger_name and TimeStamper(fmt="iso", utc=True) in one
    processor: the same keys (`level`, `logger`, `timestamp`), a third of the calls."""
    event_dict["level"] = _LEVEL_OF_METHOD.get(method_name, method_name)
    event_dict["logger"] = getattr(logger, "name", None)
    event_dict["timestamp"] = _timestamps.now()
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that keeps the name it was created for, for the `logger` key."""

    name: str | None


class LineWriter:
    """A structlog logger that writes JSON lines to a binary file, keeping its name.

    In a thread running an event loop, lines wait in a list until the end of the loop's
    iteration (one callback scheduled with call_soon) and go out in one write: a server
    answering many requests per iteration makes one system call for all their lines. Outside
    a loop (the writer process, threads, start-up) each line is written at once. Lines still
    waiting at exit are written by an atexit hook; a process killed outright (SIGKILL) loses
    at most the lines of its last loop iteration, never anything it acknowledged.
    """

    def __init__(self, file: IO[bytes], name: str | None) -> None:
        self.name = name
        self._file = file
        self._lock = threading.Lock()
        self._waiting: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def msg(self, message: bytes) -> None:
        loop = asyncio._get_running_loop()
        if loop is None or (loop is not self._loop and self._loop is not None and self._loop.is_running()):
            # No loop here, or a loop in another thread while the first one still runs: the
            # waiting lines belong to that first loop's thread alone, so this one goes at once.
            self._write([message])
            return
        if self._loop is not loop:
            if self._waiting:  # lines of a loop that stopped (tests run several): out first
                self._write_waiting()
            self._loop = loop
        if not self._waiting:
            loop.call_soon(self._write_waiting)
        self._waiting.append(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def _write_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        if waiting:
            self._write(waiting)

    def _write(self, lines: list[bytes]) -> None:
        lines.append(b"")
        with self._lock:
            try:
                self._file.write(b"\n".join(lines))
                self._file.flush()
            except (OSError, ValueError):
                pass  # stdout closed or gone (a closed pipe): logging must not fail the caller


_line_writers: list[LineWriter] = []


@atexit.register
def _write_waiting_lines() -> None:
    for writer in _line_writers:
        writer._write_waiting()


class _NamedLoggerFactory:
    """structlog's print and bytes logger factories drop the name passed to
    `structlog.get_logger(name)`; this one keeps it on the logger, where
    `add_level_logger_and_time` reads it (without routing through stdlib logging)."""

    def __init__(self, *, json: bool) -> None:
        self._json = json

    def __call__(self, *args: Any) -> _NamedPrintLogger | LineWriter:
        # Looked up at each call, not at configure time, so a replaced sys.stdout (pytest's
        # capture) is honoured; loggers are cached after first use, so this runs rarely.
        name = str(args[0]) if args else None
        if self._json:
            writer = LineWriter(sys.stdout.buffer, name)
            _line_writers.append(writer)
            return writer
        logger = _NamedPrintLogger(sys.stdout)
        logger.name = name
        return logger


def _orjson_line(event_dict: Any, **options: Any) -> bytes:
    # orjson is several times faster than json.dumps, and this runs for every request; the
    # option keeps a dict with non-string keys loggable rather than an error in a handler.
    return orjson.dumps(event_dict, option=orjson.OPT_NON_STR_KEYS, **options)


# structlog's ready-made `dict_tracebacks` includes each frame's local variables: in a request
# handler those are event data and keys, which must not reach the logs.
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


class _StdlibToStructlog(logging.Handler):
    """Lines of libraries that log through stdlib `logging` (aiohttp's "Error handling
    request" for a header line too long, asyncio's "Task exception was never retrieved") as
    structlog lines, so the server's output stays one JSON object per line: without it they
    went to stderr as plain text and tracebacks, into the same log."""

    def __init__(self) -> None:
        super().__init__()
        # One structlog logger per stdlib logger name (a handful): each creates a LineWriter.
        self._loggers: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = self._loggers.get(record.name)
            if logger is None:
                logger = self._loggers[record.name] = structlog.get_logger(record.name)
            method = _STDLIB_METHODS.get(record.levelno, "error" if record.levelno > logging.ERROR else "info")
            extra = {"exc_info": record.exc_info} if record.exc_info else {}
            getattr(logger, method)(record.getMessage(), **extra)
        except Exception:
            self.handleError(record)


_STDLIB_METHODS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


def _route_stdlib_logging(level: str) -> None:
    """Send stdlib log records (warnings and up, or `level` if higher: libraries' info chatter
    stays out, as before) through structlog, replacing a handler installed by an earlier call."""
    stop_routing_stdlib_logging()
    handler = _StdlibToStructlog()
    # The handler's level, not the root logger's: the process's logging settings stay its own.
    handler.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
    logging.getLogger().addHandler(handler)
    logging.captureWarnings(True)  # warnings.warn (a library's UserWarning) as log lines too


def stop_routing_stdlib_logging() -> None:
    """Undo `_route_stdlib_logging` (for tests that configure logging for a while)."""
    logging.captureWarnings(False)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibToStructlog):
            root.removeHandler(handler)


# multiprocessing's resource tracker, a helper process started beside the writer process,
# writes to the server's stderr (its log) without this logging: after a kill -9 of the server
# it frees the writer's semaphores and warns about each kind in plain text, the only lines of
# the log that were not JSON. That cleanup is expected after a kill, so its warning is turned
# off; the tracker takes its -W options from this process's sys.warnoptions.
_QUIET_RESOURCE_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog for the whole process; call once at program start."""
    if _QUIET_RESOURCE_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_RESOURCE_TRACKER)
    if json is None:
        json = not sys.stdout.isatty()
    shared: list[structlog.typing.Processor] = [merge_context, add_level_logger_and_time]
    rendering: list[structlog.typing.Processor] = (
        [_DICT_TRACEBACKS, structlog.processors.JSONRenderer(serializer=_orjson_line)]
        if json
        # The console renderer formats exc_info itself, highlighted.
        else [structlog.dev.ConsoleRenderer()]
    )
    structlog.configure(
        processors=shared + rendering,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_NamedLoggerFactory(json=json),
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging(level)
