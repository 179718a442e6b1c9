"""The store contract every backend implements: the rows and filters it speaks in, and two
small protocols, one per role. The writer alone holds a `StoreWriter`; the server's handlers
read through a `StoreReader`, so a slow read never waits for a write nor a write for a read."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import orjson

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


# A JSON number as JSON writes it: `007`, `+1`, `.5` or `1_000` are strings, not numbers.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?P<fraction>\.[0-9]+)?(?P<exponent>[eE][+-]?[0-9]+)?\Z")
_INT64 = range(-(2**63), 2**63)

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

    With another `op` (see `parse_operator`): `!=` is everything the equality above does not
    select; an ordering compares JSON numbers with `number`; `~` looks for `text` inside JSON
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

    @classmethod
    def parse_operator(cls, op: Operator, value: str) -> PropertyMatch:
        """The match for `data.<path><op><value>`; ValueError saying what the value must be."""
        if op in ("=", "!="):
            return replace(cls.parse(value), op=op)
        if op == "*":
            if value:
                raise ValueError("data.<property>:* says the property is present and takes nothing after *")
            return cls(kind="null", op="*")
        if op == "~":
            return cls(kind="string", text=value, op="~")
        number = cls.parse(value)
        if number.kind != "number" or number.number is None:
            raise ValueError(f"{op} compares numbers: the value must be a finite JSON number, e.g. 10")
        return replace(number, op=op)

    @classmethod
    def parse(cls, value: str) -> PropertyMatch:
        """The match for a filter value; ValueError when a quoted value is not a JSON string."""
        if value in ("true", "false", "null"):
            return cls(kind=value)  # type: ignore[arg-type]  # narrowed by the test above
        if value.startswith('"'):
            text = None
            if len(value) >= 2 and value.endswith('"'):  # orjson would also allow spaces around it
                try:
                    text = orjson.loads(value)
                except orjson.JSONDecodeError:
                    pass
            if not isinstance(text, str):
                raise ValueError('a quoted value must be one JSON string, e.g. "1"')
            return cls(kind="string", text=text)
        numeric = _JSON_NUMBER.match(value)
        if numeric is None:
            return cls(kind="string", text=value)
        number: int | float | None = None
        if numeric["fraction"] is None and numeric["exponent"] is None and len(value) <= 20:
            number = int(value)
        if number is None or number not in _INT64:
            # SQLite holds integers beyond 64 bits as doubles: compare them as doubles too.
            number = float(value)
            if not math.isfinite(number):
                number = None
        return cls(kind="number", text=value, number=number)


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
    reader: StoreReader, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str
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


class StoreReader(Protocol):
    """The read side of a store: safe to call from several threads at once, and never held up
    by the writer or by another slow read."""

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

    def keys_summary(self) -> list[tuple[str, int, int, int]]:
        """(key, count, first timestamp µs, last timestamp µs) for every key, most events first."""
        ...

    def bucket_counts(
        self, starts_us: Sequence[int], end_us: int, where: EventFilter, unique_path: str | None
    ) -> list[tuple[int, int | None]]:
        """(count, distinct values of data.`unique_path` or None) per bucket [start, next start)."""
        ...

    def unique_count(self, where: EventFilter, path: str) -> int:
        """The number of distinct values of data.`path` among matching events (null and a
        missing property not counted), exactly."""
        ...

    def unique_counts(self, starts_us: Sequence[int], end_us: int, where: EventFilter, path: str) -> UniqueCounts:
        """Distinct values of data.`path` per bucket [start, next start) and over the whole of
        `where`'s range: estimated from sketches when the store keeps them for that property
        (and `where` has keys and times only), else exactly."""
        ...

    def funnel(self, where: EventFilter, steps: Sequence[str], by_path: str, within_us: int) -> list[int]:
        """Per step (event keys), how many distinct values of data.`by_path` reached it: see
        `tlytics.store.funnel.count_funnel`; `where` applies to every step's events."""
        ...

    def breakdown(self, where: EventFilter, path: str, limit: int) -> Breakdown:
        """The `limit` most frequent values of data.`path` among matching events, the number
        of matching events, and how many of them lack the property."""
        ...

    def existing_ids(self, ids: Sequence[bytes]) -> set[bytes]:
        """Which of `ids` (16-byte UUIDs) are stored."""
        ...

    def close(self) -> None:
        """Release every read connection."""
        ...
