"""Server settings: one frozen object built by the command line (or a test) and handed to
`create_app`; nothing reads the environment behind its back.

Each setting an operator can change is declared once, on its field: flag, environment
variable, parser, default (written as an operator would type it) and help, as a
`tlytics.options.Option` (the client's `Config` declares its settings the same way). The `tlytics`
command builds its flags and reads the environment from these declarations, so a new setting
is one field here and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tlytics.setting_values as parse
from tlytics.options import Option, declared_options, option_field
from tlytics.origins import cors_origin
from tlytics.rate import Rate
from tlytics.spool import SpoolSync

# A server on a shared store has no database file to put its spool next to.
DEFAULT_SHARED_STORE_SPOOL = "./tlytics.spool"


def _option(
    flag: str,
    variable: str,
    parser: Callable[[str], Any],
    help_text: str,
    *,
    default: str | None,
    unset_means: str = "none",
    repeatable: bool = False,
    secret: bool = False,
) -> Any:
    """A dataclass field set by `flag` and `variable`. `default` is text, parsed here like any
    value an operator gives, so the field's default and the one the help shows cannot differ;
    None leaves the field unset (None, or () when repeatable)."""
    value = () if repeatable else None if default is None else parser(default)
    option = Option(
        flag=flag,
        environment_variable=variable,
        parse=parser,
        help=help_text,
        default_text=unset_means if default is None else default,
        default=lambda: value,
        repeatable=repeatable,
        secret=secret,
    )
    return option_field(option, default=value)


def worker_count(value: str) -> int:
    """A number of ingest processes, at least 1, or `auto`: one per core but one (the writer's)."""
    if value.strip().lower() == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores - 1)
    return parse.count(value)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the server needs to know; units are in the names."""

    host: str = _option("--host", "TLYTICS_HOST", parse.text, "address to listen on", default="0.0.0.0")
    port: int = _option("--port", "TLYTICS_PORT", parse.port, "port to listen on", default="8081")
    # None: the embedded SQLite store at db_path; a postgresql:// URL: PostgreSQL, shared by
    # any number of servers (each with its own spool). It may hold a password: never logged as
    # it is (see store_url_masked).
    store_url: str | None = _option(
        "--store",
        "TLYTICS_STORE",
        parse.store_url,
        "the store: postgresql://user:password@host:port/dbname for PostgreSQL, shared by several servers",
        default=None,
        unset_means="SQLite at --db",
        secret=True,
    )
    db_path: Path = _option(
        "--db", "TLYTICS_DB", parse.path, "SQLite database file (unused with --store)", default="./analytics.db"
    )
    # None: "<db_path>.spool", next to the database, or ./tlytics.spool with --store (see
    # resolved_spool_dir).
    spool_dir: Path | None = _option(
        "--spool",
        "TLYTICS_SPOOL",
        parse.path,
        "spool directory, one per server",
        default=None,
        unset_means="<db>.spool, or ./tlytics.spool with --store",
    )
    spool_sync: SpoolSync = _option(
        "--spool-sync",
        "TLYTICS_SPOOL_SYNC",
        parse.spool_sync,
        "spool durability: normal survives a process crash, full also a power loss",
        default="normal",
    )
    flush_period_s: float = _option(
        "--flush", "TLYTICS_FLUSH", parse.duration_s, "writer flush period, e.g. 500ms, 5s, 1m", default="5s"
    )
    log_level: str = _option(
        "--log-level", "TLYTICS_LOG_LEVEL", parse.log_level, "debug, info, warning or error", default="info"
    )
    # The writer's SQLite work in a process of its own (uses the second core); False keeps it
    # on a thread of the server process.
    writer_process: bool = _option(
        "--writer",
        "TLYTICS_WRITER",
        parse.writer_in_process,
        "where the writer's SQLite work runs: process (its own process, the second core) or thread",
        default="process",
    )
    # Ingest processes serving the port together (SO_REUSEPORT), each with a spool of its
    # own, drained by the one writer (tlytics.ingest.supervisor); 1 is a single process.
    workers: int = _option(
        "--workers",
        "TLYTICS_WORKERS",
        worker_count,
        "ingest processes on the port, each with its own spool, one writer for all: a number, or auto (cores - 1)",
        default="1",
    )
    max_body_bytes: int = _option(
        "--max-body",
        "TLYTICS_MAX_BODY",
        parse.size_bytes,
        "largest request body, after gzip decompression",
        default="10MiB",
    )
    max_events_per_request: int = _option(
        "--max-events", "TLYTICS_MAX_EVENTS", parse.count, "most events in one request", default="10000"
    )
    max_event_bytes: int = _option(
        "--max-event-size", "TLYTICS_MAX_EVENT_SIZE", parse.size_bytes, "largest encoded event", default="1MiB"
    )
    # A request body must arrive within this long, else the client is dropped (408).
    body_timeout_s: float = _option(
        "--body-timeout",
        "TLYTICS_BODY_TIMEOUT",
        parse.positive_duration_s,
        "time for a request body to arrive; a slower client is dropped",
        default="30s",
    )
    # At this spool size requests are refused with 503 + Retry-After until the writer catches up.
    spool_max_bytes: int = _option(
        "--spool-max",
        "TLYTICS_SPOOL_MAX",
        parse.size_bytes,
        "spool size at which requests get 503 + Retry-After",
        default="1GiB",
    )
    # Likewise while the spool's disk has less than this free (room for the writer to drain).
    spool_min_free_bytes: int = _option(
        "--spool-min-free",
        "TLYTICS_SPOOL_MIN_FREE",
        parse.size_bytes,
        "free disk kept in reserve; below it requests get 503",
        default="64MiB",
    )
    # Events older than this (by timestamp) are deleted in the background; None keeps them.
    retention_s: float | None = _option(
        "--retention",
        "TLYTICS_RETENTION",
        parse.optional_duration_s,
        "delete events older than this, e.g. 90d",
        default=None,
        unset_means="keep all",
    )
    # API keys: when any write key is set, posting events needs one; likewise reading.
    write_keys: tuple[str, ...] = _option(
        "--write-key",
        "TLYTICS_WRITE_KEYS",
        parse.api_key,
        "API key for POST /events and /batch; repeatable (env: comma-separated)",
        default=None,
        repeatable=True,
        secret=True,
    )
    # Reading scopes (see tlytics.ingest.keys): stats ⊂ read ⊂ admin. Once any of them is
    # set, every reading route needs a key whose scope opens it.
    stats_keys: tuple[str, ...] = _option(
        "--stats-key",
        "TLYTICS_STATS_KEYS",
        parse.api_key,
        "API key for aggregates only (/stats, /keys, /funnel); repeatable (env: comma-separated)",
        default=None,
        repeatable=True,
        secret=True,
    )
    read_keys: tuple[str, ...] = _option(
        "--read-key",
        "TLYTICS_READ_KEYS",
        parse.api_key,
        "API key for raw events (/view, /export, /lookup, /metrics) and aggregates; repeatable (env: comma-separated)",
        default=None,
        repeatable=True,
        secret=True,
    )
    admin_keys: tuple[str, ...] = _option(
        "--admin-key",
        "TLYTICS_ADMIN_KEYS",
        parse.api_key,
        "API key for DELETE /events and every read; repeatable (env: comma-separated)",
        default=None,
        repeatable=True,
        secret=True,
    )
    # Properties counted by /stats?unique=: each is also a declared property (below, so its
    # unique counts are exact and every filter on it reads its values), and the writer keeps
    # HyperLogLog sketches of it per 15-minute bucket for what the values cannot answer fast
    # (tlytics.store.sqlite.sketches says when each answers).
    unique_properties: tuple[str, ...] = _option(
        "--unique-property",
        "TLYTICS_UNIQUE_PROPERTIES",
        parse.unique_property,
        "declare this property (as --property) and sketch its distinct values for /stats?unique=,"
        " e.g. data.user_id; repeatable (env: comma-separated)",
        default=None,
        repeatable=True,
    )
    # Properties the writer keeps typed and indexed beside the events (backfilled in the
    # background when new), so where filters on them read an index (SQLite; tlytics.store.sqlite.properties).
    declared_properties: tuple[str, ...] = _option(
        "--property",
        "TLYTICS_PROPERTIES",
        parse.declared_property,
        "keep this property typed and indexed so where filters on it are fast (SQLite), e.g."
        " data.amount; repeatable (env: comma-separated)",
        default=None,
        repeatable=True,
    )
    # What a stats key (aggregates only) may see: breakdowns and where conditions over these
    # properties only, and no group of fewer events than min_group_size (tlytics.ingest.stats_scope).
    public_properties: tuple[str, ...] = _option(
        "--public-property",
        "TLYTICS_PUBLIC_PROPERTIES",
        parse.public_property,
        "a property a stats key may break down and filter by, e.g. data.country; repeatable"
        " (env: comma-separated); read and admin keys see every property",
        default=None,
        repeatable=True,
    )
    min_group_size: int = _option(
        "--min-group-size",
        "TLYTICS_MIN_GROUP_SIZE",
        parse.count,
        "the fewest events a breakdown group or a where-filtered answer shown to a stats key holds",
        default="5",
    )
    # More keys, one `scope secret [label]` per line, reloaded on SIGHUP and when it changes.
    keys_file: Path | None = _option(
        "--keys-file",
        "TLYTICS_KEYS_FILE",
        parse.path,
        "file of API keys, one 'scope secret [label]' per line; reloaded on change and on SIGHUP",
        default=None,
    )
    # Token buckets per key (per client address for a request without a key); None: no limit.
    rate_limit: Rate | None = _option(
        "--rate-limit",
        "TLYTICS_RATE_LIMIT",
        parse.rate,
        "requests to /events and /batch per key or client address, e.g. 2000/s or 2000/s,burst=5000",
        default=None,
        unset_means="off",
    )
    read_rate_limit: Rate | None = _option(
        "--read-rate-limit",
        "TLYTICS_READ_RATE_LIMIT",
        parse.rate,
        "requests to the reading routes per key or client address, e.g. 20/s",
        default=None,
        unset_means="off",
    )
    # Web pages allowed to send events (CORS on the write routes, sendBeacon's text/plain
    # bodies); empty: no page may, as before.
    cors_origins: tuple[str, ...] = _option(
        "--cors-origin",
        "TLYTICS_CORS_ORIGINS",
        cors_origin,
        "origin of web pages allowed to post events (https://shop.example, or * for any);"
        " repeatable (env: comma-separated)",
        default=None,
        repeatable=True,
    )
    # Failed authentications (401) per client address, whatever --rate-limit says: past it,
    # that address gets 429 on every keyed route until its bucket refills (no key guessing).
    auth_failure_rate: Rate | None = _option(
        "--auth-failure-limit",
        "TLYTICS_AUTH_FAILURE_LIMIT",
        parse.rate,
        "failed authentications (401) per client address before it gets 429, e.g. 10/s,burst=100",
        default="10/s,burst=100",
    )
    # Every read's time budget, queueing for a reading thread included: a read over it is
    # stopped inside the store (its thread freed) and answered 503 with Retry-After.
    read_timeout_s: float = _option(
        "--read-timeout",
        "TLYTICS_READ_TIMEOUT",
        parse.positive_duration_s,
        "time budget of one read (/view, /stats, /funnel, ...); a read over it is stopped and answered 503",
        default="10s",
    )
    # /health answers 503 once the store has not answered for this long (at once while it has
    # not answered since the server started): events still wait in the spool meanwhile.
    store_unhealthy_after_s: float = _option(
        "--store-unhealthy-after",
        "TLYTICS_STORE_UNHEALTHY_AFTER",
        parse.positive_duration_s,
        "how long the store may not answer before /health says 503 (at once if it never answered since start)",
        default="30s",
    )
    # A PostgreSQL that refuses this server at start (wrong password, no such database, a
    # role that may not create the schema) stops the start, unless this is set.
    start_without_store: bool = _option(
        "--start-without-store",
        "TLYTICS_START_WITHOUT_STORE",
        parse.switch,
        "start even when the store refuses this server (wrong password, no such database): events wait in the spool",
        default="no",
    )
    # Tuning without a flag: tests set these directly.
    # The writer wakes before its period once this many events wait in the spool.
    backlog_threshold_events: int = 20_000
    writer_batch_max_events: int = 20_000
    writer_batch_max_entries: int = 1_000
    # On shutdown the writer drains for at most this long; the rest waits in the spool.
    shutdown_drain_s: float = 10.0

    def __post_init__(self) -> None:
        # `--unique-property P` is one use of `--property P`: whichever form (flag, variable,
        # a test's keyword) named it, the writer declares it. Declared first, in order, once.
        merged = tuple(dict.fromkeys((*self.declared_properties, *self.unique_properties)))
        object.__setattr__(self, "declared_properties", merged)  # frozen: set once, here

    @property
    def resolved_spool_dir(self) -> Path:
        if self.spool_dir is not None:
            return self.spool_dir
        if self.store_url is not None:
            return Path(DEFAULT_SHARED_STORE_SPOOL)
        return self.db_path.with_name(self.db_path.name + ".spool")

    @property
    def store_description(self) -> str:
        """Which store this server uses, fit for a log line: the URL with its password masked,
        or the SQLite file."""
        if self.store_url is not None:
            return parse.masked_url(self.store_url)
        return f"sqlite:{self.db_path}"


def operator_options() -> list[tuple[str, Option]]:
    """(field name, option) of every setting an operator can change, in declaration order."""
    return declared_options(Settings)


# Also read by `python -m tlytics.healthcheck`, which must not parse the command line.
DEFAULT_PORT: int = Settings.port
