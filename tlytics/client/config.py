"""The client's public value types: `Config` (how to reach the server and where to spool) and
`Event` (one thing that happened)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tlytics.errors import TlyticsError

Seconds = float | timedelta


def seconds(value: Seconds) -> float:
    """A duration given as seconds or a timedelta, in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, kw_only=True)
class Config:
    """How a Client reaches the server and keeps events safe until it does.

    server_url: base URL of the Tlytics server.
    flush_period: how often the sender ships spooled events (seconds or timedelta).
    spool_dir: directory of the on-disk spool; several processes may share it.
    spool_interval: how often emitted events move from memory to disk; 0 writes each
        event to disk before `emit()` returns (slower, nothing in memory to lose).
    max_batch: events per request to the server; reaching it also triggers a send.
    max_batch_bytes: largest request body (JSON, before compression); bigger batches are
        sent in several requests, an event bigger than this alone.
    spool_max_bytes: spool size limit; when full, new events are dropped and counted.
    timeout: seconds for one HTTP request.
    on_error: called with a TlyticsError when events are set aside (dead-lettered) or
        dropped; an exception it raises is logged and ignored.
    write_key: sent as `Authorization: Bearer <key>`.
    retry_max_delay: cap of the exponential backoff between retries, in seconds.
    gzip_min_bytes: request bodies of at least this many bytes are sent gzip-compressed.
    max_memory_events: while the spool cannot take events (disk full, spool_max_bytes
        reached, I/O error), up to this many wait in memory and go to disk in order once it
        can; beyond it the newest are dropped, counted and reported through on_error.
    """

    server_url: str = "http://127.0.0.1:8081"
    flush_period: Seconds = 5.0
    spool_dir: str | Path = ".tlytics-spool"
    spool_interval: Seconds = 0.05
    max_batch: int = 1000
    # Well under the server's default 10 MiB limit on a (decompressed) body.
    max_batch_bytes: int = 4 * 1024 * 1024
    spool_max_bytes: int = 256 * 1024 * 1024
    timeout: Seconds = 10.0
    on_error: Callable[[TlyticsError], None] | None = None
    write_key: str | None = None
    retry_max_delay: Seconds = 30.0
    gzip_min_bytes: int = 4096
    max_memory_events: int = 10_000

    def __post_init__(self) -> None:
        if not self.server_url.startswith(("http://", "https://")):
            raise ValueError(f"server_url must start with http:// or https://, not {self.server_url!r}")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if self.max_memory_events < 0:
            raise ValueError("max_memory_events must not be negative")
        if self.max_batch_bytes < 1:
            raise ValueError("max_batch_bytes must be at least 1")
        for name in ("flush_period", "spool_interval", "timeout", "retry_max_delay"):
            if seconds(getattr(self, name)) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(slots=True)
class Event:
    """An analytics event. `id` (UUIDv7) and `timestamp` (now) are set at emit when absent."""

    key: str
    data: Mapping[str, Any] | None = None
    id: str | None = None
    timestamp: datetime | str | None = None
