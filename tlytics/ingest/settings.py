"""Server settings: one frozen object built by the command line (or a test) and handed to
`create_app`; nothing reads the environment behind its back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tlytics.spool import SpoolSync

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8081
DEFAULT_DB = "./analytics.db"
DEFAULT_FLUSH_PERIOD_S = 5.0
DEFAULT_BODY_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server needs to know; units are in the names."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db_path: Path = Path(DEFAULT_DB)
    # None: "<db_path>.spool", next to the database.
    spool_dir: Path | None = None
    spool_sync: SpoolSync = "normal"
    flush_period_s: float = DEFAULT_FLUSH_PERIOD_S
    max_body_bytes: int = 10 * 1024 * 1024  # after gzip decompression
    max_events_per_request: int = 10_000
    max_event_bytes: int = 1024 * 1024
    # A request body must arrive within this long, else the client is dropped (408).
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    # At this spool size requests are refused with 503 + Retry-After until the writer catches up.
    spool_max_bytes: int = 1024 * 1024 * 1024
    # Likewise while the spool's disk has less than this free (room for the writer to drain).
    spool_min_free_bytes: int = 64 * 1024 * 1024
    # API keys: when any write key is set, posting events needs one; likewise reading.
    # Events older than this (by timestamp) are deleted in the background; None keeps them.
    retention_s: float | None = None
    write_keys: tuple[str, ...] = ()
    read_keys: tuple[str, ...] = ()
    # The writer wakes before its period once this many events wait in the spool.
    backlog_threshold_events: int = 20_000
    writer_batch_max_events: int = 20_000
    writer_batch_max_entries: int = 1_000
    # The writer's SQLite work in a process of its own (uses the second core); False keeps it
    # on a thread of the server process.
    writer_process: bool = True
    log_level: str = "info"
    # On shutdown the writer drains for at most this long; the rest waits in the spool.
    shutdown_drain_s: float = 10.0

    @property
    def resolved_spool_dir(self) -> Path:
        if self.spool_dir is not None:
            return self.spool_dir
        return self.db_path.with_name(self.db_path.name + ".spool")
