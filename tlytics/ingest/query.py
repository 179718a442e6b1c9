"""Query parameters shared by the read endpoints (/view, /export, /stats, /funnel, DELETE /events):
filters, order, cursor and paging.

A bad filter is a 400 naming the parameter, never a silently ignored condition, and every value
is checked here, before it reaches the store: a number the store cannot hold (SQLite's integers
are 64 bits) is a 400 too, not an OverflowError deep in a query. `page` and `page_size` keep the
original API's forgiving defaults.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from aiohttp import web

from tlytics.ingest.filter_language import parse_operator
from tlytics.ingest.responses import ApiError
from tlytics.store import EventFilter, Position
from tlytics.store.base import Operator, PropertyMatch
from tlytics.timefmt import parse_rfc3339_us

# `data.<property>` with nested properties as `data.a.b`; also used by /stats.
DATA_PROPERTY = r"data\.(?P<path>[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)"
# The operator is the first of these after the path (a path holds none of their characters).
_WHERE = re.compile(DATA_PROPERTY + r"(?P<op>!=|>=|<=|>|<|~|:)(?P<value>.*)\Z", re.DOTALL)
_OPERATORS: dict[str, Operator] = {":": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<=", "~": "~"}
WHERE_FORMS = "data.<property>:<value>, !=<value>, >10, >=10, <10, <=10, ~<text> or :*, e.g. data.user_id:123"
_INT64 = range(-(2**63), 2**63)

# The query parameters `read_query` and `page_and_size` read: the route table (`routes.py`)
# declares each route's parameters from these, and tests/test_openapi_complete.py holds both
# the handlers (what they read) and openapi.json (what it documents) to that declaration.
# `read_query` checks the order and cursor for every route; only the routes that answer
# events in order take them (the others ignore them once checked).
FILTER_PARAMETERS = ("key", "since", "until", "where")
ORDER_PARAMETERS = ("order", "cursor")
PAGE_PARAMETERS = ("page", "page_size")

PAGE_SIZE_DEFAULT = 10
PAGE_SIZE_MAX = 1000
# Far beyond any store, and small enough for every JSON reader (JavaScript's safe integers).
PAGE_MAX = 2**53 - 1


@dataclass(frozen=True)
class ReadQuery:
    where: EventFilter
    ascending: bool
    after: Position | None


def _time(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        return parse_rfc3339_us(text)
    except ValueError as exc:
        raise ApiError(400, f"{name} is {exc}", field=name) from None


def encode_cursor(position: Position) -> str:
    raw = f"{position.timestamp_us}:{position.id.hex()}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        timestamp, id_hex = raw.split(":")
        # Digits only: int() would also take "+1", " 1" or "1_0", which no cursor holds.
        if not re.fullmatch(r"-?[0-9]{1,19}", timestamp):
            raise ValueError(timestamp)
        position = Position(timestamp_us=int(timestamp), id=bytes.fromhex(id_hex))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "cursor is not one this server gave out", field="cursor") from None
    if len(position.id) != 16 or position.timestamp_us not in _INT64:
        raise ApiError(400, "cursor is not one this server gave out", field="cursor")
    return position


def where_condition(text: str) -> tuple[str, PropertyMatch]:
    """One `where` parameter as (path, condition); a 400 naming `where` when it is wrong."""
    match = _WHERE.match(text)
    if match is None:
        raise ApiError(400, f"where must look like {WHERE_FORMS}", field="where")
    op, value = _OPERATORS[match["op"]], match["value"]
    if op == "=" and value == "*":
        op, value = "*", ""  # `data.x:*`: present; the string "*" is `data.x:"*"`
    try:
        return match["path"], parse_operator(op, value)
    except ValueError as exc:
        raise ApiError(400, f"where data.{match['path']}: {exc}", field="where") from None


def read_query(request: web.Request) -> ReadQuery:
    """Parse key, since, until, where, order and cursor; 400 with `field` when one is wrong."""
    keys = tuple(request.query.getall("key", []))
    if any(not key for key in keys):
        raise ApiError(400, "key must not be empty", field="key")
    where = tuple(where_condition(text) for text in request.query.getall("where", []))
    order = request.query.get("order", "desc")
    if order not in ("desc", "asc"):
        raise ApiError(400, "order must be desc or asc", field="order")
    cursor = request.query.get("cursor")
    return ReadQuery(
        where=EventFilter(keys=keys, since_us=_time(request, "since"), until_us=_time(request, "until"), where=where),
        ascending=order == "asc",
        after=decode_cursor(cursor) if cursor else None,
    )


def _forgiving_positive_int(text: str | None, default: int) -> int:
    """The original API's rule: anything that is not a whole number from 1 means the default.
    A number too long to matter is returned as PAGE_MAX + 1 (without converting thousands of
    digits)."""
    digits = (text or "").strip().removeprefix("+").lstrip("0")
    if not digits.isascii() or not digits.isdigit():
        return default
    return int(digits) if len(digits) <= 20 else PAGE_MAX + 1


def page_and_size(request: web.Request) -> tuple[int, int]:
    """`page` (from 1) and `page_size` (1 to PAGE_SIZE_MAX; larger means the maximum); a page
    number past PAGE_MAX is a 400: the answer echoes it, and no JSON reader holds it exactly."""
    page = _forgiving_positive_int(request.query.get("page"), 1)
    if page > PAGE_MAX:
        raise ApiError(400, f"page must be at most {PAGE_MAX}", field="page")
    page_size = min(_forgiving_positive_int(request.query.get("page_size"), PAGE_SIZE_DEFAULT), PAGE_SIZE_MAX)
    return page, page_size
