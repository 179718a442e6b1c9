"""The error hierarchy of Tlytics: one root, narrow subclasses, third-party errors translated
at the boundary (`raise StoreError(...) from exc`) so callers never need to know diskcache or APSW."""

from __future__ import annotations

from typing import Any, Literal, get_args

LimitOf = Literal["events_per_request", "bytes_per_event", "bytes_per_body", "ids_per_request"]


class TlyticsError(Exception):
    """Root of every error Tlytics raises on purpose."""


class InvalidRequest(TlyticsError, ValueError):
    """A request body the endpoint cannot take (bad JSON, wrong shape); `details` say where."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class RequestTooLarge(InvalidRequest):
    """A request with more events, or an event with more bytes, than the server takes. The
    answer (413) carries the `limit` and what it counts, `limit_of`, so a client can cut its
    next request to size without reading the message: "events_per_request", "bytes_per_event",
    "bytes_per_body" or "ids_per_request"."""

    def __init__(self, message: str, *, limit: int, limit_of: LimitOf, **where: Any) -> None:
        super().__init__(message, limit=limit, limit_of=limit_of, **where)


def stated_limit(answer: object) -> tuple[int, LimitOf | None] | None:
    """The `limit` a 413 answer states and what it counts (None where the answer does not say:
    a server from before `limit_of`, or a proxy); None when it states no usable limit. The
    client's sender and tlytics-replay each learn from it."""
    if not isinstance(answer, dict):
        return None
    limit = answer.get("limit")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return None
    limit_of = answer.get("limit_of")
    return limit, limit_of if limit_of in get_args(LimitOf) else None


class InvalidEvent(InvalidRequest):
    """An event (or the request carrying it) breaks the data model; says where."""

    def __init__(self, message: str, *, index: int | None = None, field: str | None = None) -> None:
        self.index = index
        self.field = field
        super().__init__(message, **self.location())

    def location(self) -> dict[str, Any]:
        """Where the problem is: `index` of the event and `field`, where known."""
        where: dict[str, Any] = {}
        if self.index is not None:
            where["index"] = self.index
        if self.field is not None:
            where["field"] = self.field
        return where


class SpoolError(TlyticsError):
    """The on-disk spool could not durably take or give back entries."""


class SpoolFull(SpoolError):
    """The spool reached its size limit; nothing was written."""


class EventsDropped(SpoolError):
    """The client dropped its `count` newest events: the spool could not take them and the
    events kept in memory meanwhile reached `Config.max_memory_events`."""

    def __init__(self, message: str, *, count: int) -> None:
        super().__init__(message)
        self.count = count


class StoreError(TlyticsError):
    """The event store (SQLite, PostgreSQL) failed a read or a write."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (PostgreSQL down or restarting); a retry later may do."""


class ReadTimedOut(StoreUnavailable):
    """A read ran out of its time budget (`--read-timeout`, `budget_s`) and was stopped."""

    def __init__(self, message: str, *, budget_s: float | None) -> None:
        super().__init__(message)
        self.budget_s = budget_s


class StoreMisconfigured(StoreError):
    """The store refuses this server for good as configured (wrong password, no such database,
    a role that may not create the schema): waiting will not help, an operator must."""


class DeliveryError(TlyticsError):
    """The client could not deliver events to the server."""


class ClientClosed(TlyticsError):
    """`emit()` or `emit_and_send()` on a Client after its `close()`: the event would never be sent."""


class ServerUnreachable(DeliveryError):
    """No server answers at the configured address (connection refused, no route, unknown host)."""


class EventsRejected(DeliveryError):
    """The server refused events for good (a 4xx); they were moved to the dead-letter spool."""

    def __init__(self, message: str, *, status: int, events: list[Any]) -> None:
        super().__init__(message)
        self.status = status
        self.events = events
