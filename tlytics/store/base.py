"""The store contract every backend implements: the rows and filters it speaks in, and one
shape per role. The writer alone holds a `StoreWriter`; the server's handlers read through a
`StoreReader`, which runs a dialect's query functions (its `Queries`) on connections of its
own, so a slow read never waits for a write nor a write for a read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, TypeVarTuple

# (id as 16 bytes, key, timestamp µs UTC, received_at µs UTC, data as JSON text)
StoreRow = tuple[bytes, str, int, int, str]
C = TypeVar("C")  # a dialect's connection
T = TypeVar("T")
Args = TypeVarTuple("Args")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as read back from the store."""

    id: str
    key: str
    timestamp_us: int
    received_at_us: int
    data_json: str


ValueKind = Literal["true", "false", "null", "number", "string"]
# How a property is compared: `=` and `!=` typed as below, `>` `>=` `<` `<=` on JSON numbers
# only, `~` a case-insensitive substring of a JSON string, `*` present (whatever the value).
Operator = Literal["=", "!=", ">", ">=", "<", "<=", "~", "*"]
ORDERINGS: tuple[Operator, ...] = (">", ">=", "<", "<=")


@dataclass(frozen=True, slots=True)
class PropertyMatch:
    """What `data.<path>:<value>` selects, typed as a JSON reader expects.

    `true`, `false`, `null`: that JSON literal only. A JSON number: any JSON number of that
    value (`1` matches `1` and `1.0`, never `true`), and also the string spelt exactly so
    (`"1"`). `"…"` (JSON string syntax): only that string. Anything else: that string.

    With another `op` (parsed by `tlytics.ingest.filter_language`): `!=` is everything the
    equality above does not select; an ordering compares JSON numbers with `number`; `~` looks for `text` inside JSON
    strings; `*` (kind unused) asks only that the property be present.
    """

    kind: ValueKind
    # The string matched: the value's own text for "number" and "string".
    text: str = ""
    # For "number": the value to compare numerically, bound without overflow (an int within
    # 64 bits, else a float); None when no finite number has that value (`1e400`), so only
    # the string form can match.
    number: int | float | None = None
    # `=` unless said otherwise; `!=` selects exactly the events `=` does not (a missing
    # property too), so `data.x:v` and `data.x!=v` split the events in two.
    op: Operator = "="


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a read selects; every condition must hold."""

    keys: tuple[str, ...] = ()
    since_us: int | None = None  # inclusive
    until_us: int | None = None  # exclusive
    # (path inside data, e.g. "user_id" or "a.b", what its value must be).
    where: tuple[tuple[str, PropertyMatch], ...] = ()

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


@dataclass(frozen=True, slots=True)
class Breakdown:
    """The most frequent values of a property (JSON values, most frequent first, with their
    counts), the number of events considered, and how many of those lack the property (a
    property present with JSON null is the value None, not missing)."""

    top: list[tuple[Any, int]]
    total: int
    missing: int


@dataclass(frozen=True, slots=True)
class UniqueCounts:
    """Distinct values of a property per bucket and over the whole range, and how they were
    counted: "exact", or "hll" (a HyperLogLog sketch, `relative_error` its relative standard
    error)."""

    per_bucket: list[int]
    total: int
    method: Literal["exact", "hll"] = "exact"
    relative_error: float | None = None


def exact_unique_counts(
    reader: StoreReader[Any], starts_us: Sequence[int], end_us: int, where: EventFilter, path: str
) -> UniqueCounts:
    """`StoreReader.unique_counts` counted exactly, from the events."""
    per_bucket = [unique or 0 for _, unique in reader.bucket_counts(starts_us, end_us, where, path)]
    return UniqueCounts(per_bucket=per_bucket, total=reader.unique_count(where, path))


class StoreWriter(Protocol):
    """The write side of a store: used by the writer alone, one call at a time. Inserts are
    idempotent on `id`, and an erased id is never stored again."""

    def insert(self, rows: Sequence[StoreRow]) -> int:
        """Insert rows in one transaction, ignoring ids already stored or erased; return how
        many were new."""
        ...

    def delete_matching(self, where: EventFilter, *, max_rows: int, remember_ids: bool) -> int:
        """Delete up to `max_rows` matching events in one transaction; return how many.
        With `remember_ids` (erasure), those ids are never stored again."""
        ...

    def close(self) -> None:
        """Release the write connection."""
        ...


@dataclass(frozen=True, slots=True)
class Queries(Generic[C]):
    """The questions a store answers, as one dialect's query functions `fn(connection, *args)`
    (C: its connection), run by a reader: `reader.run(queries.page, …)`. Each backend fills
    one; a new question is a new field and one function per dialect."""

    # Number of events stored.
    count: Callable[[C], int]
    # (page, page_size, where, after, ascending): matching events newest first (timestamp,
    # then id; `ascending` reverses), either the `page`-th page (from 1) or, with `after`, the
    # page that follows that position.
    page: Callable[[C, int, int, EventFilter, Position | None, bool], Page]
    # (key, count, first timestamp µs, last timestamp µs) for every key, most events first.
    keys_summary: Callable[[C], list[tuple[str, int, int, int]]]
    # (starts_us, end_us, where, unique_path): (count, distinct values of data.`unique_path`
    # or None) per bucket [start, next start).
    bucket_counts: Callable[[C, Sequence[int], int, EventFilter, str | None], list[tuple[int, int | None]]]
    # (where, path): distinct values of data.`path` among matching events (null and a missing
    # property not counted), exactly.
    unique_count: Callable[[C, EventFilter, str], int]
    # (starts_us, end_us, where, path): distinct values of data.`path` per bucket and over the
    # whole of `where`'s range: estimated from sketches when the store keeps them for that
    # property (and `where` has keys and times only), else exactly.
    unique_counts: Callable[[C, Sequence[int], int, EventFilter, str], UniqueCounts]
    # (where, steps, by_path, within_us): per step, how many distinct values of data.`by_path`
    # reached it (see `tlytics.store.funnel.count_funnel`); `where` applies to every step.
    funnel: Callable[[C, EventFilter, Sequence[str], str, int], list[int]]
    # (where, path, limit): the `limit` most frequent values of data.`path` among matching
    # events, the number of matching events, and how many of them lack the property.
    breakdown: Callable[[C, EventFilter, str, int], Breakdown]
    # Which of `ids` (16-byte UUIDs) are stored.
    existing_ids: Callable[[C, Sequence[bytes]], set[bytes]]


class StoreReader(Generic[C]):
    """The read side of a store: `run(fn, *args)` calls a query function of `queries` with a
    connection of its own (one per thread), so it is safe to call from several threads at once
    and never held up by the writer or by another slow read. The methods below are the same
    questions asked by name, for tools and tests, each written here once."""

    queries: Queries[C]

    def run(self, fn: Callable[[C, *Args], T], *args: *Args) -> T:
        """`fn(connection, *args)` on this thread's connection; StoreError when it fails."""
        raise NotImplementedError

    def close(self) -> None:
        """Release every read connection."""
        raise NotImplementedError

    def count(self) -> int:
        return self.run(self.queries.count)

    def page(
        self,
        page: int,
        page_size: int,
        *,
        where: EventFilter = EventFilter(),
        after: Position | None = None,
        ascending: bool = False,
    ) -> Page:
        return self.run(self.queries.page, page, page_size, where, after, ascending)

    def keys_summary(self) -> list[tuple[str, int, int, int]]:
        return self.run(self.queries.keys_summary)

    def bucket_counts(
        self, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
    ) -> list[tuple[int, int | None]]:
        return self.run(self.queries.bucket_counts, starts_us, end_us, where, unique_path)

    def unique_count(self, where: EventFilter, path: str) -> int:
        return self.run(self.queries.unique_count, where, path)

    def unique_counts(self, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str) -> UniqueCounts:
        return self.run(self.queries.unique_counts, starts_us, end_us, where, path)

    def funnel(self, where: EventFilter, steps: Sequence[str], by_path: str, within_us: int) -> list[int]:
        return self.run(self.queries.funnel, where, steps, by_path, within_us)

    def breakdown(self, where: EventFilter, path: str, limit: int) -> Breakdown:
        return self.run(self.queries.breakdown, where, path, limit)

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        return self.run(self.queries.existing_ids, ids)
