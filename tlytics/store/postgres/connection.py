"""Opening PostgreSQL connections the way every part of the store needs them, and the one
place where psycopg's errors become `StoreError`.

A connection gives up after a few seconds when the server cannot be reached (the writer retries
with backoff, and a read answers 503 rather than hang), and it never names the password of the
URL in a message.

Reader connections also carry a `statement_timeout` (`reader_url`), so PostgreSQL itself stops a
read that outlives its budget; the cancellation is `ReadTimedOut`. And errors are sorted here by
what they mean for the caller (tlytics.store.postgres.backend asks): PostgreSQL unreachable now
(`unreachable`: a 503), a lost connection (PostgreSQL restarted: open another and try again),
or a store that refuses this server for good (`refuses_for_good`: a wrong password, no
such database, a role that may not create the schema), which no amount of waiting mends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import conninfo, errors

from tlytics.errors import ReadTimedOut, StoreError, StoreUnavailable
from tlytics.store.budget import current_budget, over_budget_message

CONNECT_TIMEOUT_S = 5
# SQLSTATEs of a server that refuses this client for good: wrong password or no such role
# (28P01, 28000: also "no pg_hba.conf entry"), no such database (3D000), a privilege the
# schema's migrations need (42501).
_REFUSED_FOR_GOOD_SQLSTATES = frozenset({"28P01", "28000", "3D000", "42501"})
# libpq raises connection failures without a SQLSTATE: PostgreSQL's own words (in English,
# its default lc_messages) then tell the same refusals apart from "not there (yet)".
_REFUSED_FOR_GOOD_WORDS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "permission denied",
    "no password supplied",
)


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
    except errors.QueryCanceled as exc:
        # statement_timeout (the reader's budget) or a cancel: for a read with a budget, that
        # budget ran out.
        budget = current_budget()
        if budget is None:
            raise StoreError(f"{action} failed: {str(exc).strip()}") from exc
        raise ReadTimedOut(over_budget_message(budget.seconds), budget_s=budget.seconds) from exc
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


def reader_url(url: str, *, statement_timeout_s: float) -> str:
    """`url` (a URL or key=value conninfo) whose connections stop any statement after
    `statement_timeout_s`: the reader's time budget, enforced by PostgreSQL (the options the
    URL already has are kept)."""
    options = conninfo.conninfo_to_dict(url).get("options") or ""
    timeout_ms = max(1, round(statement_timeout_s * 1000))
    return conninfo.make_conninfo(url, options=f"{options} -c statement_timeout={timeout_ms}".strip())


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` means PostgreSQL cannot be reached now (down, restarting, the connection
    lost) rather than a failed query: psycopg says so by the class of the error underneath."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, StoreUnavailable | psycopg.OperationalError | psycopg.InterfaceError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) says the connection itself is gone
    (PostgreSQL restarted or shut down, the network dropped it) rather than that a query failed:
    a new connection may well do."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, errors.QueryCanceled):
            return False  # a timeout or a cancel: the connection is fine
        if isinstance(cause, errors.AdminShutdown | errors.CrashShutdown | errors.CannotConnectNow):
            return True
        if isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError) and cause.sqlstate is None:
            return True  # libpq's own: the server closed the connection, the socket broke
        cause = cause.__cause__ or cause.__context__
    return False


def refuses_for_good(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) says PostgreSQL refuses this server as
    configured (see _REFUSED_FOR_GOOD_SQLSTATES), rather than that it cannot be reached now."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, psycopg.Error):
            if cause.sqlstate in _REFUSED_FOR_GOOD_SQLSTATES:
                return True
            if cause.sqlstate is None and any(words in str(cause) for words in _REFUSED_FOR_GOOD_WORDS):
                return True
        cause = cause.__cause__ or cause.__context__
    return False
