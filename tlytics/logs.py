"""Logging set-up: structlog configured once, JSON lines when stdout is not a terminal (so log
shippers can parse them; tracebacks as dicts, serialized by orjson), a readable console
renderer when a person is watching. Every line names its logger (`structlog.get_logger(name)`)
and carries the context bound with `structlog.contextvars` (the request id, for one)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that keeps the name it was created for, for `add_logger_name`."""

    name: str | None


class _NamedBytesLogger(structlog.BytesLogger):
    """A BytesLogger that keeps the name it was created for, for `add_logger_name`."""

    name: str | None


class _NamedLoggerFactory:
    """structlog's print and bytes logger factories drop the name passed to
    `structlog.get_logger(name)`; this one keeps it on the logger, where
    `structlog.stdlib.add_logger_name` reads it (without routing through stdlib logging)."""

    def __init__(self, *, json: bool) -> None:
        self._json = json

    def __call__(self, *args: Any) -> _NamedPrintLogger | _NamedBytesLogger:
        # Looked up at each call, not at configure time, so a replaced sys.stdout (pytest's
        # capture) is honoured; loggers are cached after first use, so this runs rarely.
        logger = _NamedBytesLogger(sys.stdout.buffer) if self._json else _NamedPrintLogger(sys.stdout)
        logger.name = str(args[0]) if args else None
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


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog for the whole process; call once at program start."""
    if json is None:
        json = not sys.stdout.isatty()
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
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
