"""The store interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
class Page:
    """One page of events and the store's total, read from one snapshot."""

    total: int
    events: list[StoredEvent]


class Store(Protocol):
    """What the server needs from an event store; implementations must be idempotent on `id`."""

    def insert(self, rows: Sequence[StoreRow]) -> int:
        """Insert rows in one transaction, ignoring ids already stored; return how many were new."""
        ...

    def count(self) -> int:
        """Number of events stored."""
        ...

    def page(self, page: int, page_size: int) -> Page:
        """Events newest first (timestamp, then id, descending); `page` counts from 1."""
        ...

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        """Which of `ids` (16-byte UUIDs) are stored."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
