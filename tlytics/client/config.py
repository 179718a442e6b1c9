"""The client's public value types: `Config` (how to reach the server and where to spool) and
`Event` (one thing that happened).

Every Config field but the callables can also come from a `TLYTICS_CLIENT_<FIELD>` environment
variable (`TLYTICS_CLIENT_SERVER_URL`, `TLYTICS_CLIENT_WRITE_KEY`…), read when the Config is
made: the old names without CLIENT_ (`TLYTICS_SERVER_URL`) still work, with a
DeprecationWarning and a log line naming the new one, which wins when both are set. An
argument given explicitly wins, then the variable, then the default. A variable that is set
but malformed raises ValueError naming it, so a typo in a deployment fails at start-up
instead of quietly using a default.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

import tlytics.setting_values as parse
from tlytics.errors import TlyticsError
from tlytics.options import Option, declared_options, option_field, read_environment

if TYPE_CHECKING:
    import ssl
    from types import FrameType

    from tlytics.client.transport import BaseTransport

Seconds = float | timedelta

log = logging.getLogger("tlytics.client")


def seconds(value: Seconds) -> float:
    """A duration given as seconds or a timedelta, in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def default_spool_dir() -> Path:
    """The user's cache directory (e.g. ~/.cache/tlytics/spool), not the working directory:
    an application started from anywhere finds the events an earlier run left behind."""
    return Path(platformdirs.user_cache_dir("tlytics")) / "spool"


# --- declaring a setting the environment may give ------------------------------------------

_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()
# The client's variables say whose they are: TLYTICS_SPOOL is the server's spool,
# TLYTICS_CLIENT_SPOOL_DIR the client's.
CLIENT_PREFIX = "TLYTICS_CLIENT_"
# Before that prefix the client read TLYTICS_<FIELD>; those still work, with a warning.
_OLD_PREFIX = "TLYTICS_"


def _setting(
    variable: str,
    parser: Callable[[str], Any],
    help_text: str,
    *,
    default: str | None,
    unset_means: str = "none",
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
) -> Any:
    """A Config field that `variable` (or its old name, without CLIENT_) may set. It defaults to
    a marker, replaced in __post_init__ by the variable's value or the real default, so an
    explicit argument (even one equal to the default) always wins. `default` is text, parsed
    like a variable's value; `factory` computes a default when the Config is made."""
    value = None if default is None else parser(default)
    option = Option(
        environment_variable=variable,
        deprecated_variables=(_OLD_PREFIX + variable.removeprefix(CLIENT_PREFIX),),
        parse=parser,
        help=help_text,
        default_text=unset_means if default is None else default,
        default=factory or (lambda: value),
        secret=secret,
    )
    return option_field(option, default=_UNSET)


def _from_environment(option: Option, environ: Mapping[str, str]) -> Any:
    found = read_environment(option, environ, blank_is_unset=True)
    if found is None:  # unset, or set to nothing (`TLYTICS_CLIENT_WRITE_KEY=` in a compose file)
        return option.default()
    if found.deprecation is not None:
        log.warning("%s", found.deprecation)
        warnings.warn(found.deprecation, DeprecationWarning, stacklevel=_caller_stacklevel())
    return found.value


def _caller_stacklevel() -> int:
    """The stacklevel for warnings.warn (called by the caller of this function) that points at
    the application's line making the Config (or the Client), past the frames of this package,
    the dataclass's generated __init__ among them (its code runs in this module's globals)."""
    frame: FrameType | None = sys._getframe(2)  # the warning's caller's caller
    level = 2
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "tlytics":
        frame = frame.f_back
        level += 1
    return level


@dataclass(frozen=True, kw_only=True)
class Config:
    """How a Client reaches the server and keeps events safe until it does.

    Each field below but on_error and before_send may also be set by the environment
    variable `TLYTICS_CLIENT_<FIELD>` (e.g. TLYTICS_CLIENT_SERVER_URL; the old TLYTICS_<FIELD>
    still works, deprecated); an explicit argument wins.

    server_url: base URL of the Tlytics server.
    write_key: sent as `Authorization: Bearer <key>`.
    flush_period: how often the sender ships spooled events (seconds or timedelta).
    spool_dir: directory of the on-disk spool; several processes may share it. Default: the
        user's cache directory, `platformdirs.user_cache_dir("tlytics")/spool`.
    spool_interval: how often emitted events move from memory to disk; 0 writes each
        event to disk before `emit()` returns (slower, nothing in memory to lose).
    max_batch: events per request to the server; reaching it also triggers a send.
    max_batch_bytes: largest request body (JSON, before compression); bigger batches are
        sent in several requests, an event bigger than this alone.
    spool_max_bytes: spool size limit; when full, new events wait in memory (max_memory_events).
    spool_min_free_bytes: free disk kept in reserve on the spool's file system: appends stop
        below it, so that delivered entries can always be removed and the spool reopened.
    timeout: seconds for one HTTP request.
    retry_max_delay: cap of the exponential backoff between retries, in seconds.
    gzip_min_bytes: request bodies of at least this many bytes are sent gzip-compressed.
    max_memory_events: while the spool cannot take events (disk full, spool_max_bytes
        reached, I/O error, a spool_dir that cannot be written), up to this many wait in
        memory and go to disk in order once it can; beyond it the newest are dropped,
        counted and reported through on_error.
    disabled: a no-op client: no thread, no disk, no network; `emit()` still validates the
        event and returns its id.
    capture: for the application's own tests: no thread, no disk, no network; every event
        is validated and kept in memory, in `client.captured` (see tlytics.testing).
    flush_at_exit: at interpreter exit, how long to try delivering what is pending (seconds
        or timedelta); what is not delivered by then stays on disk. 0 only writes memory to
        disk.
    default_data: merged into every event's data; the event's own values win.
    before_send: called with each event (default_data merged) before it is recorded;
        returns the event, changed or not, or None to drop it (not counted as lost). When it
        raises or returns something else, the event is dropped (it may hold what the hook
        was meant to remove), logged, counted and reported to on_error as BeforeSendFailed.
    on_error: called with a TlyticsError when events are set aside (dead-lettered) or
        dropped, or the spool cannot be used; an exception it raises is logged and ignored.
    headers: extra HTTP headers sent with every request (a JSON object in the environment).
    ca_bundle: a CA bundle file to verify an https server with (default: the system's).
    ssl_context: an ssl.SSLContext for https (wins over ca_bundle); not from the environment.
    transport: what requests go through instead of HTTP (a tlytics.client.transport.
        MockTransport in tests); shared by the client's threads, so it must be thread-safe.
    The proxy environment variables HTTPS_PROXY, HTTP_PROXY and NO_PROXY (any case) apply.
    """

    server_url: str = _setting(
        "TLYTICS_CLIENT_SERVER_URL", parse.text, "where the server is", default="http://127.0.0.1:8081"
    )
    write_key: str | None = _setting(
        "TLYTICS_CLIENT_WRITE_KEY", parse.text, "sent as Authorization: Bearer <key>", default=None, secret=True
    )
    flush_period: Seconds = _setting(
        "TLYTICS_CLIENT_FLUSH_PERIOD", parse.seconds_number, "how often spooled events are sent", default="5"
    )
    spool_dir: str | Path = _setting(
        "TLYTICS_CLIENT_SPOOL_DIR",
        parse.path,
        "the on-disk spool; processes may share it",
        default=None,
        unset_means='platformdirs.user_cache_dir("tlytics")/spool',
        factory=default_spool_dir,
    )
    spool_interval: Seconds = _setting(
        "TLYTICS_CLIENT_SPOOL_INTERVAL", parse.seconds_number, "how often memory goes to disk", default="0.05"
    )
    max_batch: int = _setting("TLYTICS_CLIENT_MAX_BATCH", parse.whole_number, "events per request", default="1000")
    # 4 MiB: well under the server's default 10 MiB limit on a (decompressed) body.
    max_batch_bytes: int = _setting(
        "TLYTICS_CLIENT_MAX_BATCH_BYTES", parse.whole_number, "largest request body", default="4194304"
    )
    spool_max_bytes: int = _setting(
        "TLYTICS_CLIENT_SPOOL_MAX_BYTES", parse.whole_number, "spool size limit", default="268435456"
    )
    spool_min_free_bytes: int = _setting(
        "TLYTICS_CLIENT_SPOOL_MIN_FREE_BYTES", parse.whole_number, "free disk kept in reserve", default="16777216"
    )
    timeout: Seconds = _setting("TLYTICS_CLIENT_TIMEOUT", parse.seconds_number, "one HTTP request", default="10")
    retry_max_delay: Seconds = _setting(
        "TLYTICS_CLIENT_RETRY_MAX_DELAY", parse.seconds_number, "cap of the backoff between retries", default="30"
    )
    gzip_min_bytes: int = _setting(
        "TLYTICS_CLIENT_GZIP_MIN_BYTES", parse.whole_number, "bodies this big or bigger are gzipped", default="4096"
    )
    max_memory_events: int = _setting(
        "TLYTICS_CLIENT_MAX_MEMORY_EVENTS",
        parse.whole_number,
        "events kept in memory while the spool cannot take them",
        default="10000",
    )
    disabled: bool = _setting("TLYTICS_CLIENT_DISABLED", parse.switch, "a no-op client", default="false")
    capture: bool = _setting("TLYTICS_CLIENT_CAPTURE", parse.switch, "keep events in memory", default="false")
    flush_at_exit: Seconds = _setting(
        "TLYTICS_CLIENT_FLUSH_AT_EXIT", parse.seconds_number, "at exit, try this long to deliver", default="1"
    )
    default_data: Mapping[str, Any] | None = _setting(
        "TLYTICS_CLIENT_DEFAULT_DATA", parse.json_object, "merged into every event's data", default=None
    )
    before_send: Callable[[Event], Event | None] | None = None
    on_error: Callable[[TlyticsError], None] | None = None
    headers: Mapping[str, str] | None = _setting(
        "TLYTICS_CLIENT_HEADERS", parse.json_object, "extra HTTP headers with every request", default=None
    )
    ca_bundle: str | Path | None = _setting(
        "TLYTICS_CLIENT_CA_BUNDLE", parse.path, "a CA bundle to verify an https server with", default=None
    )
    ssl_context: ssl.SSLContext | None = None
    transport: BaseTransport | None = None

    def __post_init__(self) -> None:
        for name, option in client_options():
            if getattr(self, name) is _UNSET:
                object.__setattr__(self, name, _from_environment(option, os.environ))
        if not self.server_url.startswith(("http://", "https://")):
            raise ValueError(f"server_url must start with http:// or https://, not {self.server_url!r}")
        if self.write_key is not None and not all("!" <= c <= "~" for c in self.write_key):
            # The key is not shown. It travels in a header, which http.client sends as latin-1.
            raise ValueError("write_key must be printable ASCII without spaces, as the server's keys are")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if self.spool_min_free_bytes < 0:
            raise ValueError("spool_min_free_bytes must not be negative")
        if self.headers is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in dict(self.headers).items()
        ):
            raise ValueError("headers must map strings to strings")
        if self.max_memory_events < 0:
            raise ValueError("max_memory_events must not be negative")
        if self.max_batch_bytes < 1:
            raise ValueError("max_batch_bytes must be at least 1")
        if self.spool_max_bytes < 1:
            raise ValueError("spool_max_bytes must be at least 1")  # else every event is dropped
        for name in ("flush_period", "spool_interval", "timeout", "retry_max_delay", "flush_at_exit"):
            value = seconds(getattr(self, name))
            # NaN passes `< 0`; infinity would wait forever (flush_at_exit: an exit that hangs).
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds, not negative")
        if seconds(self.timeout) == 0:
            # A request that times out at once: nothing would ever be delivered.
            raise ValueError("timeout must be above 0")
        if self.default_data is not None and not isinstance(self.default_data, Mapping):
            raise ValueError("default_data must be a mapping")
        for name in ("before_send", "on_error"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ValueError(f"{name} must be callable")


def client_options() -> list[tuple[str, Option]]:
    """(field name, option) of every Config field the environment may set."""
    return declared_options(Config)


def settable_fields() -> list[tuple[str, str]]:
    """(field, environment variable) for every Config field the environment may set."""
    return [(name, option.environment_variable) for name, option in client_options()]


@dataclass(slots=True)
class Event:
    """An analytics event. `id` (UUIDv7) and `timestamp` (now) are set at emit when absent."""

    key: str
    data: Mapping[str, Any] | None = None
    id: str | None = None
    timestamp: datetime | str | None = None
