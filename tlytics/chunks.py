"""Cutting a sequence into slices small enough for one SQL statement.

SQLite refuses a statement with more bound parameters than its limit (32,766 today, 999 in
builds before 3.32), and a very long `IN (?, ?, …)` list is slow to prepare anyway, so a query
over many ids runs once per chunk. The size is chosen here once for every such query.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# Under the oldest SQLite limit (999), and large enough that a chunk's round trip is cheap.
PARAMETERS_PER_STATEMENT = 500


def chunks(items: Sequence[T], size: int = PARAMETERS_PER_STATEMENT) -> Iterator[Sequence[T]]:
    """Consecutive slices of `items`, each at most `size` long (none for an empty sequence)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
