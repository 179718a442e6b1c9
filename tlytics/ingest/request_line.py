"""The request's context and its canonical log line (see `middleware`) at a smaller share of a
request's CPU: at one event per request the line and its context were about a fifteenth of the
ingest process's work.

- Context: the same structlog context variables `structlog.contextvars.bind_contextvars` sets
  (so every other line logged while serving the request carries them), each looked up once
  per process instead of by name on every bind.
- The line: the processors of the logger's configuration, run here directly, the same ones in
  the same order with the same arguments, and the result handed to the same logger: the very
  line structlog writes (whatever the configuration: JSON, the console's, a test's capture),
  without the three calls, the context copy and the checks around each of structlog's
  bound-logger methods, and without two of the processors' own calls: the exception renderer
  when there is no exception, the JSON renderer's wrapper around its serializer. A logger that
  is not a level-filtering one (a test may configure another) goes through structlog as before.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import structlog

_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX
# Processors run here without their __call__ where that is plainly the same (see log_line).
_ExceptionRenderer = structlog.processors.ExceptionRenderer
_JSONRenderer = structlog.processors.JSONRenderer
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _structlog_variable(name: str) -> contextvars.ContextVar[Any]:
    """The ContextVar structlog binds `name` in (bound in a throwaway context to find it)."""

    def bind() -> contextvars.ContextVar[Any]:
        token = structlog.contextvars.bind_contextvars(**{name: None})[name]
        return token.var

    return contextvars.copy_context().run(bind)


_variables: dict[str, contextvars.ContextVar[Any]] = {}


def bind(name: str, value: Any) -> None:
    """`structlog.contextvars.bind_contextvars(name=value)`, one variable at a time."""
    variable = _variables.get(name)
    if variable is None:
        variable = _variables[name] = _structlog_variable(name)
    variable.set(value)


_REQUEST_ID = _structlog_variable("request_id")
_METHOD = _structlog_variable("method")
_PATH = _structlog_variable("path")


def start_request(request_id: str, method: str, path: str) -> None:
    """Unbind whatever the context holds (as `clear_contextvars`), then bind the request's id,
    method and path."""
    for variable in contextvars.copy_context():
        if variable.name.startswith(_PREFIX):
            variable.set(Ellipsis)
    _REQUEST_ID.set(request_id)
    _METHOD.set(method)
    _PATH.set(path)


def log_line(proxy: Any, level: str, event: str, **fields: Any) -> None:
    """`getattr(proxy, level)(event, **fields)` with the processors run here (see above)."""
    bound = proxy.bind()  # the logger structlog caches for `proxy` after its first use
    enabled = getattr(bound, "is_enabled_for", None)
    processors = getattr(bound, "_processors", None)
    if enabled is None or processors is None:
        getattr(bound, level)(event, **fields)
        return
    if not enabled(_LEVELS[level]):
        return
    event_dict: Any = bound._context.copy()
    event_dict.update(fields)
    event_dict["event"] = event
    logger = bound._logger
    try:
        for processor in processors:
            kind = type(processor)
            if kind is _ExceptionRenderer:
                # Without `exc_info` it only pops it and returns the same dict.
                if "exc_info" not in event_dict:
                    continue
            elif kind is _JSONRenderer:
                # What its __call__ does, one call fewer: `serializer(event_dict, **dumps_kw)`.
                event_dict = processor._dumps(event_dict, **processor._dumps_kw)
                continue
            event_dict = processor(logger, level, event_dict)
    except structlog.DropEvent:
        return
    write = getattr(logger, level)
    if isinstance(event_dict, (str, bytes, bytearray)):
        write(event_dict)
    elif isinstance(event_dict, tuple):
        args, kwargs = event_dict
        write(*args, **kwargs)
    else:
        write(**event_dict)
