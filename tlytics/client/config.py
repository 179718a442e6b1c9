"""The client's public value types: `Config` (how to reach the server and where to spool) and
`Event` (one thing that happened).

Every Config field but the callables can also come from a `TLYTICS_<FIELD>` environment
variable (`TLYTICS_SERVER_URL`, `TLYTICS_WRITE_KEY`…), read when the Config is made: an
argument given explicitly wins, then the variable, then the default. A variable that is set
but malformed raises ValueError naming it, so a typo in a deployment fails at start-up
instead of quietly using a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import platformdirs

from tlytics.errors import TlyticsError

if TYPE_CHECKING:
    import ssl

    from tlytics.client.transport import BaseTransport

Seconds = float | timedelta

ENVIRONMENT_PREFIX = "TLYTICS_"


def seconds(value: Seconds) -> float:
    """A duration given as seconds or a timedelta, in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def default_spool_dir() -> Path:
    """The user's cache directory (e.g. ~/.cache/tlytics/spool), not the working directory:
    an application started from anywhere finds the events an earlier run left behind."""
    return Path(platformdirs.user_cache_dir("tlytics")) / "spool"


# --- reading one environment variable ------------------------------------------------------


def _parse_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number of seconds")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean (1/0, true/false, yes/no, on/off)")


def _parse_json_object(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "seconds": _parse_seconds,
    "int": int,
    "bool": _parse_bool,
    "path": Path,
    "json_object": _parse_json_object,
}

_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()
_META = "tlytics_setting"


@dataclass(frozen=True, slots=True)
class _Setting:
    default: Callable[[], Any]
    kind: str  # a key of _PARSERS
    secret: bool = False


def _setting(default: Any, kind: str, *, secret: bool = False, factory: Callable[[], Any] | None = None) -> Any:
    """A Config field that the environment may set: it defaults to a marker, replaced in
    __post_init__ by the variable's value or the real default, so an explicit argument (even
    one equal to the default) always wins."""
    metadata = {_META: _Setting(factory or (lambda: default), kind, secret)}
    return dataclasses.field(default=_UNSET, metadata=metadata, repr=not secret)


def environment_variable(field_name: str) -> str:
    """The environment variable that sets a Config field."""
    return ENVIRONMENT_PREFIX + field_name.upper()


def _from_environment(name: str, setting: _Setting, environ: Mapping[str, str]) -> Any:
    variable = environment_variable(name)
    text = environ.get(variable, "")
    if not text.strip():  # unset, or set to nothing (`TLYTICS_WRITE_KEY=` in a compose file)
        return setting.default()
    try:
        return _PARSERS[setting.kind](text.strip())
    except (ValueError, orjson.JSONDecodeError) as exc:
        shown = "…" if setting.secret else repr(text)
        raise ValueError(f"environment variable {variable}={shown}: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class Config:
    """How a Client reaches the server and keeps events safe until it does.

    Each field below but on_error and before_send may also be set by the environment
    variable `TLYTICS_<FIELD>` (e.g. TLYTICS_SERVER_URL); an explicit argument wins.

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

    server_url: str = _setting("http://127.0.0.1:8081", "str")
    write_key: str | None = _setting(None, "str", secret=True)
    flush_period: Seconds = _setting(5.0, "seconds")
    spool_dir: str | Path = _setting(None, "path", factory=default_spool_dir)
    spool_interval: Seconds = _setting(0.05, "seconds")
    max_batch: int = _setting(1000, "int")
    # Well under the server's default 10 MiB limit on a (decompressed) body.
    max_batch_bytes: int = _setting(4 * 1024 * 1024, "int")
    spool_max_bytes: int = _setting(256 * 1024 * 1024, "int")
    spool_min_free_bytes: int = _setting(16 * 1024 * 1024, "int")
    timeout: Seconds = _setting(10.0, "seconds")
    retry_max_delay: Seconds = _setting(30.0, "seconds")
    gzip_min_bytes: int = _setting(4096, "int")
    max_memory_events: int = _setting(10_000, "int")
    disabled: bool = _setting(False, "bool")
    capture: bool = _setting(False, "bool")
    flush_at_exit: Seconds = _setting(1.0, "seconds")
    default_data: Mapping[str, Any] | None = _setting(None, "json_object")
    before_send: Callable[[Event], Event | None] | None = None
    on_error: Callable[[TlyticsError], None] | None = None
    headers: Mapping[str, str] | None = _setting(None, "json_object")
    ca_bundle: str | Path | None = _setting(None, "path")
    ssl_context: ssl.SSLContext | None = None
    transport: BaseTransport | None = None

    def __post_init__(self) -> None:
        environ = os.environ
        for field in dataclasses.fields(self):
            setting = field.metadata.get(_META)
            if setting is not None and getattr(self, field.name) is _UNSET:
                object.__setattr__(self, field.name, _from_environment(field.name, setting, environ))
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


def settable_fields() -> list[tuple[str, str]]:
    """(field, environment variable) for every Config field the environment may set."""
    return [(f.name, environment_variable(f.name)) for f in dataclasses.fields(Config) if _META in f.metadata]


@dataclass(slots=True)
class Event:
    """An analytics event. `id` (UUIDv7) and `timestamp` (now) are set at emit when absent."""

    key: str
    data: Mapping[str, Any] | None = None
    id: str | None = None
    timestamp: datetime | str | None = None
