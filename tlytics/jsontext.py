"""JSON text as Tlytics accepts and stores it: one owner for what "valid" and "canonical" mean.

An event's `data` is stored as its **canonical text**: the JSON it arrived as with every
insignificant whitespace removed and nothing else changed (numbers keep their spelling, so
`1E2` and `12345678901234567890123` come back as sent; strings keep their escapes). The same
input gives the same bytes whichever way it came in.

On top of JSON's grammar, a value is refused when a consumer could not read it back as it
was meant: a key twice in one object (SQLite's JSON functions read the first, Python and
JavaScript the last), a number with a fraction or exponent beyond a double's range (`1e400`
reads as infinity), an integer of more than 4,300 digits (Python's limit; shorter integers
are kept exactly, as arbitrary-precision readers read them), `NaN`/`Infinity` (not JSON), a
lone UTF-16 surrogate escape (`"\\ud800"`: not Unicode), or nesting deeper than `DEPTH_MAX`
(a recursive reader would crash on it).

`parse_checked` is the exact (slower) reading used to say precisely what is wrong; the fast
path in `tlytics.ingest.fastpath` only ever accepts a subset of it, checked by a property test.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DEPTH_MAX = 128
INT_DIGITS_MAX = 4_300  # Python's own limit for int(text); msgspec's decoder shares it

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(rb"[^\[\]{}]+")
_OPENING = frozenset(b"[{")


class JsonProblem:
    """Stands in, inside a parsed value, for a part that breaks the rules above."""

    __slots__ = ("message", "repeated_key")

    def __init__(self, message: str, repeated_key: str | None = None) -> None:
        self.message = message
        # For an object with a key twice: that key (an event's error names it as the field).
        self.repeated_key = repeated_key


def canonical(text: bytes) -> bytes:
    """The canonical text of valid JSON: whitespace between tokens removed, nothing else changed."""
    # Imported here: the client library validates events with this module and must not need
    # msgspec, a dependency of the server extra only (after the first call this is a dict lookup).
    import msgspec.json

    return msgspec.json.format(text, indent=-1)


def nesting_depth(text: bytes) -> int:
    """How deeply arrays and objects nest in JSON text (`{}` is 1, `{"a":[1]}` is 2).

    Iterative, so any depth is measured without recursion; strings are skipped, so a bracket
    inside one does not count.
    """
    brackets = _NOT_A_BRACKET.sub(b"", _STRING.sub(b"", text))
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPENING:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def at_most_depth(text: bytes, depth_max: int = DEPTH_MAX) -> bool:
    """Whether `text` nests at most `depth_max` deep; counting brackets first is enough for
    most values (fewer containers than the limit cannot nest deeper than it)."""
    text = bytes(text)
    if text.count(b"{") + text.count(b"[") <= depth_max:
        return True
    return nesting_depth(text) <= depth_max


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any] | JsonProblem:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                return JsonProblem(f"has the key {name!r} twice in one object", repeated_key=name)
            seen.add(name)
    return value


def _float(text: str) -> float | JsonProblem:
    number = float(text)
    if math.isinf(number):
        return JsonProblem(f"has a number beyond a double's range ({text[:40]})")
    return number


def _int(text: str) -> int | JsonProblem:
    digits = len(text.lstrip("-"))
    if digits > INT_DIGITS_MAX:
        return JsonProblem(f"has an integer of {digits} digits (at most {INT_DIGITS_MAX})")
    return int(text)


def _constant(text: str) -> JsonProblem:
    return JsonProblem(f"has {text}, which is not JSON")


def parse_checked(text: str) -> Any:
    """Parse JSON text, putting a JsonProblem where a part breaks the rules, for `problem()`
    to find with its place. Raises json.JSONDecodeError on bad syntax and RecursionError on
    nesting deeper than Python's recursion limit (measure with `nesting_depth` first)."""
    return json.loads(text, object_pairs_hook=_pairs, parse_float=_float, parse_int=_int, parse_constant=_constant)


def problem(value: Any, depth_max: int = DEPTH_MAX) -> str | None:
    """What is wrong inside a parsed value (see parse_checked), or None; walks iteratively."""
    if isinstance(value, JsonProblem):
        return value.message
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, JsonProblem):
            return item.message
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                return "has a string that is not Unicode (a lone surrogate such as \\ud800)"
            continue
        if isinstance(item, dict):
            children: Any = item.values()
            if not all(isinstance(name, str) and (name.isascii() or not _has_surrogate(name)) for name in item):
                return "has a key that is not Unicode (a lone surrogate such as \\ud800)"
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > depth_max:
            return f"nests deeper than {depth_max} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
