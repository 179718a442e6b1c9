"""Query parameters shared by the read endpoints (/view, /export): filters, order and cursor.

A bad filter is a 400 naming the parameter, never a silently ignored condition; `page` and
`page_size` keep the original API's forgiving defaults.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from aiohttp import web

from tlytics.ingest.responses import ApiError
from tlytics.store import EventFilter, Position
from tlytics.timefmt import parse_rfc3339_us

# `data.<property>` with nested properties as `data.a.b`; also used by /stats.
DATA_PROPERTY = r"data\.(?P<path>[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)"
_WHERE = re.compile(DATA_PROPERTY + r":(?P<value>.*)\Z", re.DOTALL)


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
        position = Position(timestamp_us=int(timestamp), id=bytes.fromhex(id_hex))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "cursor is not one this server gave out", field="cursor") from None
    if len(position.id) != 16:
        raise ApiError(400, "cursor is not one this server gave out", field="cursor")
    return position


def read_query(request: web.Request) -> ReadQuery:
    """Parse key, since, until, where, order and cursor; 400 with `field` when one is wrong."""
    keys = tuple(request.query.getall("key", []))
    if any(not key for key in keys):
        raise ApiError(400, "key must not be empty", field="key")
    where: list[tuple[str, str]] = []
    for condition in request.query.getall("where", []):
        match = _WHERE.match(condition)
        if match is None:
            raise ApiError(400, "where must look like data.<property>:<value>, e.g. data.user_id:123", field="where")
        where.append((match["path"], match["value"]))
    order = request.query.get("order", "desc")
    if order not in ("desc", "asc"):
        raise ApiError(400, "order must be desc or asc", field="order")
    cursor = request.query.get("cursor")
    return ReadQuery(
        where=EventFilter(
            keys=keys, since_us=_time(request, "since"), until_us=_time(request, "until"), where=tuple(where)
        ),
        ascending=order == "asc",
        after=decode_cursor(cursor) if cursor else None,
    )
