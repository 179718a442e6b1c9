"""Opening PostgreSQL connections the way every part of the store needs them, and the one
place where psycopg's errors become `StoreError`.

A connection gives up after a few seconds when the server cannot be reached (the writer retries
with backoff, and a read answers 503 rather than hang), and it never names the password of the
URL in a message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import conninfo

from tlytics.errors import StoreError

CONNECT_TIMEOUT_S = 5


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "a PostgreSQL URL that cannot be parsed"
    host, port, dbname = parts.get("host", "localhost"), parts.get("port", "5432"), parts.get("dbname", "")
    return f"postgresql://{parts.get('user', '')}@{host}:{port}/{dbname}"


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Turn a psycopg error inside into `StoreError("<action> failed: <PostgreSQL's message>")`,
    the psycopg error kept as its cause; other errors pass through."""
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(f"{action} failed: {str(exc).strip()}") from exc


def connect(url: str, *, application: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the store at `url`, outside any transaction (each call opens its own)."""
    connection = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name=application,
    )
    return connection


def unusable(connection: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether a connection must be replaced (the server went away, or it was closed)."""
    return connection.closed or connection.broken
