"""The filter language of `where=data.<path><op><value>`: what a value written in a query means,
parsed into the store's `PropertyMatch` (tlytics.store.base). The HTTP side owns the language
(`query.py` reads the parameters, this module their values); the store only speaks the parsed
value. Free of aiohttp, so tools and tests parse filters without the HTTP server.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import orjson

from tlytics.store.base import Operator, PropertyMatch

# A JSON number as JSON writes it: `007`, `+1`, `.5` or `1_000` are strings, not numbers.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?P<fraction>\.[0-9]+)?(?P<exponent>[eE][+-]?[0-9]+)?\Z")
_INT64 = range(-(2**63), 2**63)


def parse_operator(op: Operator, value: str) -> PropertyMatch:
    """The match for `data.<path><op><value>`; ValueError saying what the value must be."""
    if op in ("=", "!="):
        return replace(parse_value(value), op=op)
    if op == "*":
        if value:
            raise ValueError("data.<property>:* says the property is present and takes nothing after *")
        return PropertyMatch(kind="null", op="*")
    if op == "~":
        return PropertyMatch(kind="string", text=value, op="~")
    number = parse_value(value)
    if number.kind != "number" or number.number is None:
        raise ValueError(f"{op} compares numbers: the value must be a finite JSON number, e.g. 10")
    return replace(number, op=op)


def parse_value(value: str) -> PropertyMatch:
    """The match for a filter value; ValueError when a quoted value is not a JSON string."""
    if value in ("true", "false", "null"):
        return PropertyMatch(kind=value)  # type: ignore[arg-type]  # narrowed by the test above
    if value.startswith('"'):
        text = None
        if len(value) >= 2 and value.endswith('"'):  # orjson would also allow spaces around it
            try:
                text = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        if not isinstance(text, str):
            raise ValueError('a quoted value must be one JSON string, e.g. "1"')
        return PropertyMatch(kind="string", text=text)
    numeric = _JSON_NUMBER.match(value)
    if numeric is None:
        return PropertyMatch(kind="string", text=value)
    number: int | float | None = None
    if numeric["fraction"] is None and numeric["exponent"] is None and len(value) <= 20:
        number = int(value)
    if number is None or number not in _INT64:
        # SQLite holds integers beyond 64 bits as doubles: compare them as doubles too.
        number = float(value)
        if not math.isfinite(number):
            number = None
    return PropertyMatch(kind="number", text=value, number=number)
