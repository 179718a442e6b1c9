"""Store rows still in the form a spool entry's decoder handed them over.

The writer used to convert every spooled event in Python (hex id to bytes, raw data to str, a
new tuple) before the store bound them again: a quarter of its CPU. `SpooledRows` keeps the
decoded entries as they are; a store that can bind them so (SQLite: `unhex()` and a cast in
its INSERT) does, and any other reader of the sequence gets the very `StoreRow`s the
conversion always made (`tlytics.spool.entry.store_rows`), converted on first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from tlytics.store.base import StoreRow

# (id as hex digits, key, timestamp µs, data: a buffer holding its canonical JSON text)
SpooledEvent = tuple[str, str, int, Any]


class UnconvertibleRow(ValueError):
    """A spooled event whose store row cannot be made (an id that is not hex digits, data that
    is not UTF-8): the writer then converts entry by entry and quarantines that entry."""


class SpooledRows(Sequence[StoreRow]):
    """The store rows of decoded spool entries, (received_at µs, events), in their order."""

    def __init__(self, entries: Sequence[tuple[int, Sequence[SpooledEvent]]]) -> None:
        self.entries = entries
        self._count = sum(len(events) for _received_at, events in entries)
        self._converted: list[StoreRow] | None = None

    def bound(self) -> list[tuple[str, str, int, Any, int]]:
        """Each event as it was decoded, with its entry's received_at last."""
        return [(*event, received_at) for received_at, events in self.entries for event in events]

    def _rows(self) -> list[StoreRow]:
        if self._converted is None:
            try:
                self._converted = [
                    (bytes.fromhex(id_hex), key, timestamp_us, received_at, bytes(data).decode())
                    for received_at, events in self.entries
                    for id_hex, key, timestamp_us, data in events
                ]
            except ValueError as exc:
                raise UnconvertibleRow(str(exc)) from exc
        return self._converted

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> StoreRow: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[StoreRow]: ...

    def __getitem__(self, index: int | slice) -> StoreRow | Sequence[StoreRow]:
        return self._rows()[index]

    def __iter__(self) -> Iterator[StoreRow]:
        return iter(self._rows())
