"""What a caller who may read aggregates only learns from /stats and /funnel.

A `stats` key (the one a share link carries) learns aggregates, never the raw values of a
property nor one person singled out (DESIGN §5). A caller who may also read raw events (a read
or admin key, or anyone on a server without reading keys) gets every answer in full; for the
others, in short:

- `breakdown=` and `where=` name only the properties the operator declared public
  (`--public-property`); `unique=` and `/funnel by=` take any property, since they answer
  how many distinct values there are, never which;
- a `where` is an equality (`data.x:v`) or a presence (`data.x:*`): no `!=`, ordering or
  substring, whose differences with another answer would count a value's events without
  naming it;
- a breakdown lists scalar values each held by at least `--min-group-size` events; rarer
  values, objects and arrays are counted in the `other` group, unnamed;
- a question narrowed by `where` that matches fewer than `--min-group-size` events (or, for a
  funnel, actors at its first step) is refused, so "nobody" and "a few" look alike.

Refusals are 403 answers naming the parameter. What remains possible is written in the
README's access section: counts of events per key and time (as precise as a minute), and
differences between two allowed answers (two windows, or a filtered and an unfiltered one).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from tlytics.ingest.auth import may_call, presented_key
from tlytics.ingest.responses import ApiError
from tlytics.ingest.state import KEYS, SETTINGS
from tlytics.store import EventFilter
from tlytics.store.base import Breakdown

_ALLOWED_OPERATORS = ("=", "*")
_SCALARS = (str, int, float, bool, type(None))


def aggregates_only(request: web.Request) -> bool:
    """Whether this request may read aggregates but not raw events: the stats scope's rules
    apply to it."""
    ring = request.app[KEYS].ring
    key = presented_key(request, ring) if ring.keys else None
    return not may_call(ring, "read", key)


def min_group_size(request: web.Request) -> int:
    return request.app[SETTINGS].min_group_size


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(403, f"{message} (a stats key learns aggregates only)", field=field, scope="stats")


def check_public(request: web.Request, field: str, path: str) -> None:
    """A 403 naming `field` unless data.`path` is declared public."""
    if path not in request.app[SETTINGS].public_properties:
        raise _refuse(
            field,
            f"{field} data.{path}: this property is not declared public (--public-property),"
            " so its values are not shown to this key",
        )


def check_where(request: web.Request, where: EventFilter) -> None:
    """A 403 naming `where` for a condition the stats scope does not take."""
    for path, match in where.where:
        check_public(request, "where", path)
        if match.op not in _ALLOWED_OPERATORS:
            raise _refuse("where", f"where data.{path}: this key filters with data.<property>:<value> or :* only")


def check_group(request: web.Request, where: EventFilter, counts: Iterable[int]) -> None:
    """A 403 naming `where` when a filtered question matched fewer than the minimum group
    (each of `counts`: a period's events, or a funnel's first step)."""
    if not where.where:
        return
    smallest = min(counts, default=0)
    if smallest < (k := min_group_size(request)):
        raise _refuse(
            "where",
            f"fewer than {k} match these where conditions (--min-group-size): a smaller group is not shown",
        )


def shown_groups(request: web.Request, found: Breakdown) -> list[tuple[object, int]]:
    """The groups of a breakdown this request may see: every one for a reader of raw events;
    else scalar values held by at least the minimum group size (the rest goes to `other`)."""
    if not aggregates_only(request):
        return found.top
    k = min_group_size(request)
    return [(value, n) for value, n in found.top if n >= k and isinstance(value, _SCALARS)]
