"""From what the application passes to `emit()` to the event as it will be spooled: one pure
function, `prepare_event()`, used by `emit()` and `emit_and_send()` alike.

Every rule the server would apply is applied here, at `emit()`, so an event that could never
be stored raises InvalidEvent in the caller instead of being dropped in the background: a
key the server refuses, an id that is not a UUID, a timestamp out of range, data that is not
JSON the way the server reads it (a key that is not a string, NaN or Infinity anywhere, a set,
bytes). The data is encoded to JSON text right here: the copy the application can no longer
change, and the bytes the spooler writes as they are. Integers of any size the server accepts
(up to 4,300 digits) go out exactly.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from tlytics.client.config import Event
from tlytics.client.hooks import BeforeSendFailed, run_before_send
from tlytics.errors import InvalidEvent
from tlytics.events import UUID_PATTERN, check_key
from tlytics.ids import uuid7_int
from tlytics.jsontext import DEPTH_MAX, INT_DIGITS_MAX
from tlytics.timefmt import check_in_range_us, datetime_to_us, format_rfc3339_us, parse_rfc3339_us


class Prepared(NamedTuple):
    """An event ready for the spool: its id, key, timestamp (ns since the epoch, or RFC 3339
    text the application gave) and its data as JSON text."""

    id: str
    key: str
    timestamp: int | str
    data_json: bytes


class Filtered(NamedTuple):
    """before_send returned None: the event is not recorded (on purpose, not lost)."""

    id: str


_EVENT_ID = re.compile(UUID_PATTERN)
_DIGITS_PER_BIT = math.log10(2)
_NOT_JSON_TYPES = (set, frozenset, bytes, bytearray, memoryview)
_NEVER_NON_FINITE = frozenset({str, int, bool, type(None)})
# Keys that passed check_key lately: an application emits a few dozen keys, millions of times.
# Cleared when full rather than ordered: a dict of str is safe to share between threads.
_KEYS_CHECKED_MAX = 1024
_keys_checked: dict[str, None] = {}
# The fewest characters of JSON text that nests deeper than DEPTH_MAX: as many [ as ].
_DEEPER_THAN_MAX_CHARS = 2 * (DEPTH_MAX + 1)
_new_prepared = tuple.__new__  # Prepared(...) runs a Python-level __new__: a frame per event


def new_event_id() -> str:
    # bytes.hex() rather than f"{value:032x}": formatting a 128-bit integer costs more than
    # making the id.
    h = uuid7_int().to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def checked_id(event_id: object) -> str:
    """An event id as the server stores it (lowercase), or InvalidEvent: an id the server
    refuses ("", braces, no hyphens) must not wait in the spool to be dead-lettered later."""
    if not isinstance(event_id, str) or _EVENT_ID.match(event_id) is None:
        raise InvalidEvent("id must be a UUID string, e.g. 0190a5d6-0000-7000-8000-000000000001", field="id")
    return event_id.lower()


def checked_timestamp(timestamp: object) -> str:
    """An application's timestamp as RFC 3339 text, or InvalidEvent (the server's rules)."""
    try:
        if isinstance(timestamp, datetime):
            if timestamp.tzinfo is None:
                raise InvalidEvent("timestamp must be timezone-aware", field="timestamp")
            return format_rfc3339_us(check_in_range_us(datetime_to_us(timestamp)))
        if not isinstance(timestamp, str):
            raise InvalidEvent("timestamp must be a timezone-aware datetime or RFC 3339 text", field="timestamp")
        parse_rfc3339_us(timestamp)
    except ValueError as exc:
        if isinstance(exc, InvalidEvent):
            raise
        raise InvalidEvent(f"timestamp is {exc}", field="timestamp") from None
    return timestamp


def _json_default(value: Any) -> Any:
    # A Decimal goes as its text (as before: a number the application chose not to round);
    # sets and bytes have no JSON form the server would give back, so they are refused.
    if isinstance(value, _NOT_JSON_TYPES):
        raise TypeError(f"{type(value).__name__} is not JSON")
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, float):
        # A float subclass (numpy.float64 is one), which orjson does not take: a number, not
        # its text; NaN and Infinity refused like a float's.
        if not math.isfinite(value):
            raise TypeError(f"{value} is not a JSON number")
        return float(value)
    if isinstance(value, Decimal) and not value.is_finite():
        raise TypeError(f"{value} is not a JSON number")
    return str(value)


def checked_key(key: object) -> str:
    """check_key's answer, from a small cache of keys already seen (its regular expressions
    cost more than the rest of emit's key handling)."""
    if type(key) is str and key in _keys_checked:
        return key
    check_key(key)
    assert isinstance(key, str)  # check_key refuses anything else
    if type(key) is str:  # a str subclass may hash or compare as it likes: checked every time
        if len(_keys_checked) >= _KEYS_CHECKED_MAX:
            _keys_checked.clear()
        _keys_checked[key] = None
    return key


def _holds_non_finite(container: Any) -> bool:
    """Whether a float NaN or infinity is anywhere in `container` (orjson wrote it as null):
    _problem's walk without building a path for every value. Recursion is bounded: orjson
    refused anything deeper than 254 levels before this is called."""
    values = container.values() if type(container) is dict or isinstance(container, Mapping) else container
    for value in values:
        kind = type(value)
        if kind in _NEVER_NON_FINITE:
            continue
        if kind is float or isinstance(value, float):
            if not math.isfinite(value):
                return True
        elif (kind is dict or kind is list or kind is tuple or isinstance(value, Mapping | list | tuple)) and (
            _holds_non_finite(value)
        ):
            return True
    return False


def _problem(data: Any) -> str | None:
    """Where and why `data` is not JSON the server takes, or None (then only orjson's 64-bit
    integer range was in the way)."""
    stack: list[tuple[Any, str, int]] = [(data, "data", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{path} is {value}, not a JSON number (the server refuses NaN and Infinity)"
        elif isinstance(value, bool | str | None):
            continue
        elif isinstance(value, int):
            if value.bit_length() * _DIGITS_PER_BIT > INT_DIGITS_MAX:
                return f"{path} has more than {INT_DIGITS_MAX} digits"
        elif isinstance(value, Mapping):
            if depth > DEPTH_MAX:
                return f"{path} nests deeper than {DEPTH_MAX} levels"
            for name, item in value.items():
                if not isinstance(name, str):
                    return f"{path} has the key {name!r}: keys must be strings"
                stack.append((item, f"{path}[{name!r}]", depth + 1))
        elif isinstance(value, list | tuple):
            if depth > DEPTH_MAX:
                return f"{path} nests deeper than {DEPTH_MAX} levels"
            stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
        elif isinstance(value, _NOT_JSON_TYPES):
            return f"{path} is a {type(value).__name__}, which is not JSON (use a list or a string)"
        elif isinstance(value, Decimal) and not value.is_finite():
            return f"{path} is {value}, not a JSON number"
    return None


def encode_data(data: Mapping[str, Any]) -> bytes:
    """`data` as compact JSON text; InvalidEvent (field "data", saying where) when the server
    would refuse it or could not give it back as it was."""
    try:
        # Without `default` first: plain JSON types, the common case, cost half as much.
        # orjson refuses keys that are not strings, sets, bytes and integers beyond 64 bits.
        text = orjson.dumps(data)
    except TypeError:
        return _encode_unusual(data)
    # orjson writes NaN and Infinity as null: only text with a null can hold one.
    if b"null" in text and _holds_non_finite(data):
        raise InvalidEvent(_problem(data) or "data holds NaN or Infinity", field="data")
    if (
        len(text) >= _DEEPER_THAN_MAX_CHARS
        and text.count(b"{") + text.count(b"[") > DEPTH_MAX
        and (where := _problem(data)) is not None
    ):
        raise InvalidEvent(where, field="data")
    return text


def _encode_unusual(data: Mapping[str, Any]) -> bytes:
    """encode_data for what plain orjson refused: Decimals and Mappings that are not dicts
    (through `default`), integers beyond 64 bits (the standard library), or a refusal."""
    try:
        text = orjson.dumps(data, default=_json_default)
    except TypeError:
        where = _problem(data)
        if where is not None:
            raise InvalidEvent(where, field="data") from None
        # Integers beyond 64 bits: the standard library writes them exactly.
        try:
            return json.dumps(
                data, default=_json_default, ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode("utf-8", "strict")
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise InvalidEvent(f"data is not JSON: {exc}", field="data") from None
    if (b"null" in text or text.count(b"{") + text.count(b"[") > DEPTH_MAX) and (where := _problem(data)) is not None:
        raise InvalidEvent(where, field="data")
    return text


def merged(base: Mapping[str, Any] | None, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`data` on top of `base`: the event's own values win."""
    if not base:
        return data
    combined = dict(base)
    combined.update(data)
    return combined


def prepare_event(
    event: Event | str,
    data: Mapping[str, Any] | None = None,
    *,
    event_id: str | None = None,
    timestamp: datetime | str | None = None,
    default_data: Mapping[str, Any] | None = None,
    before_send: Callable[[Event], Event | None] | None = None,
) -> Prepared | Filtered:
    """The event as it will be spooled, checked by the server's rules (InvalidEvent if not).

    `default_data` (Config's, then the context's) is merged under the event's own data, then
    `before_send` sees the event and may change or drop it (Filtered). BeforeSendFailed when
    the hook fails: the event is dropped rather than sent unscrubbed.
    """
    if (
        type(data) is dict
        and type(event) is str
        and event_id is None
        and timestamp is None
        and not default_data
        and before_send is None
    ):
        return prepare_plain(event, data)
    if isinstance(event, str):
        key = event
    else:
        if data is not None or event_id is not None or timestamp is not None:
            raise TypeError("emit(Event(...)) takes no other arguments: set them on the Event")
        key, event_id, timestamp, data = event.key, event.id, event.timestamp, event.data
    checked_key(key)
    when: int | str = time.time_ns() if timestamp is None else checked_timestamp(timestamp)
    event_id = new_event_id() if event_id is None else checked_id(event_id)
    if data is None:
        data = {}
    elif not isinstance(data, Mapping):
        raise InvalidEvent("data must be a mapping", field="data")
    data = merged(default_data, data)
    if before_send is not None:
        answer = _run_before_send(before_send, event_id, key, when, data)
        if answer is None:
            return Filtered(event_id)
        return prepare_event(answer.key, answer.data, event_id=answer.id, timestamp=answer.timestamp)
    return Prepared(event_id, key, when, encode_data(data))


def prepare_plain(key: str, data: dict[str, Any]) -> Prepared:
    """prepare_event for the common case, the same checks without its detours: a key and a
    dict, no id, timestamp, default data or hook (emit() calls it directly then)."""
    return _new_prepared(Prepared, (new_event_id(), checked_key(key), time.time_ns(), encode_data(data)))


def _run_before_send(
    hook: Callable[[Event], Event | None], event_id: str, key: str, when: int | str, data: Mapping[str, Any]
) -> Event | None:
    shown = Event(
        key=key,
        data=dict(data),
        id=event_id,
        timestamp=format_rfc3339_us(when // 1000) if isinstance(when, int) else when,
    )
    try:
        answer = run_before_send(hook, shown)
        if answer is not None:
            # The hook may have changed anything: the same checks as emit()'s, now.
            prepare_event(answer.key, answer.data, event_id=answer.id, timestamp=answer.timestamp)
    except Exception as exc:
        raise BeforeSendFailed(
            f"before_send failed on event {event_id} ({key}): {exc!r}; the event was dropped",
            event_id=event_id,
            key=key,
        ) from exc
    return answer


# --- JSON that keeps integers exact ----------------------------------------------------------

# orjson reads an integer beyond 64 bits as a float (silently rounded) and cannot write one:
# text with a run of 19 digits or more takes the standard library's exact (slower) path.
_LONG_DIGITS = re.compile(rb"\d{19,}")


def loads_exact(text: bytes) -> Any:
    """JSON text decoded with every integer exact."""
    if _LONG_DIGITS.search(text) is None:
        return orjson.loads(text)
    return json.loads(text)


def dumps_exact(value: Any) -> bytes:
    """Compact JSON text of decoded JSON (loads_exact's), integers of any size exact."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# --- spool entries --------------------------------------------------------------------------


def _event_object(event: Prepared) -> dict[str, Any]:
    # id first, then key: the sender counts events by that start (delivery.entry_event_count).
    event_id, key, when, data_json = event
    return {
        "id": event_id,
        "key": key,
        "timestamp": format_rfc3339_us(when // 1000) if isinstance(when, int) else when,
        "data": orjson.Fragment(data_json),  # already JSON text: written as it is
    }


def event_json(event: Prepared) -> bytes:
    """One event as the server takes it."""
    return orjson.dumps(_event_object(event))


def entry_bytes(events: list[Prepared]) -> bytes:
    """A spool entry: the JSON array of `events`."""
    return orjson.dumps([_event_object(event) for event in events])
