"""The store interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# (id as 16 bytes, key, timestamp µs UTC, received_at µs UTC, data as JSON text)
StoreRow = tuple[bytes, str, int, int, str]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as read back from the store."""

    id: str
    key: str
    timestamp_us: int
    received_at_us: int
    data_json: str


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a read selects; every condition must hold."""

    keys: tuple[str, ...] = ()
    since_us: int | None = None  # inclusive
    until_us: int | None = None  # exclusive
    # (path inside data, e.g. "user_id" or "a.b", value): the property equals the value,
    # compared as text, or as a number when the value reads as one.
    where: tuple[tuple[str, str], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.keys or self.where) and self.since_us is None and self.until_us is None


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended, for keyset pagination: the last event's timestamp and id."""

    timestamp_us: int
    id: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """One page of events, the total matching, and where the next page starts (None: no more)."""

    total: int
    events: list[StoredEvent]
    next_position: Position | None = None


class Store(Protocol):
    """What the server needs from an event store; implementations must be idempotent on `id`."""

    def insert(self, rows: Sequence[StoreRow]) -> int:
        """Insert rows in one transaction, ignoring ids already stored; return how many were new."""
        ...

    def count(self) -> int:
        """Number of events stored."""
        ...

    def page(
        self,
        page: int,
        page_size: int,
        *,
        where: EventFilter = EventFilter(),
        after: Position | None = None,
        ascending: bool = False,
    ) -> Page:
        """Matching events newest first (timestamp, then id; `ascending` reverses), either the
        `page`-th page (from 1) or, with `after`, the page that follows that position."""
        ...

    def delete_matching(self, where: EventFilter, *, max_rows: int, remember_ids: bool) -> int:
        """Delete up to `max_rows` matching events in one transaction; return how many.
        With `remember_ids` (erasure), those ids are never stored again."""
        ...

    def keys_summary(self) -> list[tuple[str, int, int, int]]:
        """(key, count, first timestamp µs, last timestamp µs) for every key, most events first."""
        ...

    def bucket_counts(
        self, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
    ) -> list[tuple[int, int | None]]:
        """(count, distinct values of data.`unique_path` or None) per bucket [start, next start)."""
        ...

    def breakdown(self, where: EventFilter, path: str, limit: int) -> tuple[list[tuple[Any, int]], int]:
        """The `limit` most frequent values of data.`path` among matching events, and their total."""
        ...

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        """Which of `ids` (16-byte UUIDs) are stored."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
