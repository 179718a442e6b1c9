"""A request body in, its spool entry out: the fast path first, the reference rules second.

The fast path decodes, validates and normalizes a request in one pass with msgspec, which
checks types, lengths and unknown fields in C and keeps each event's `data` as the raw JSON
bytes it arrived as (`msgspec.Raw`), never decoded and re-encoded. It takes only requests it
can prove valid; anything else goes through the reference rules (`tlytics.events`,
`tlytics.jsontext`), slower, which either accept it or say precisely what is wrong and where.
Both build the entry with `encode_spool_entry` from the canonical `data` text, so an event
gives the same spool bytes whichever path took it (a property test checks this), and both
measure an event with `tlytics.events.event_size_bytes`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw, Struct

from tlytics.errors import InvalidEvent, InvalidRequest, RequestTooLarge
from tlytics.events import EVENT_OVERHEAD_BYTES, KEY_MAX_CHARS, UUID_PATTERN, event_size_bytes, normalize_events
from tlytics.ids import BLOCK_MAX, uuid7_block, uuid7_int
from tlytics.jsontext import DEPTH_MAX, at_most_depth, canonical, parse_checked, problem
from tlytics.timefmt import parse_rfc3339_us

_OPEN_BRACE = 0x7B
_EMPTY_OBJECT = Raw(b"{}")
# An event's key takes at most 4 bytes per character: below this, no event can be too large.
_KEY_MAX_BYTES = 4 * KEY_MAX_CHARS

SpoolRow = tuple[str, str, int, Raw]  # (id as 32 hex digits, key, timestamp µs, canonical data)


class _EventIn(Struct, forbid_unknown_fields=True):
    # No `pattern` for the key: msgspec runs a Python regex per value, which cost more than
    # half of this path; `str.isprintable` in the loop below proves the same, in C.
    key: Annotated[str, Meta(min_length=1, max_length=KEY_MAX_CHARS)]
    id: Annotated[str, Meta(pattern=UUID_PATTERN)] | None = None
    timestamp: str | None = None
    data: Raw = Raw(b"")


class _BatchIn(Struct):
    events: list[_EventIn]


class _EntryOut(Struct, array_like=False):
    received_at: int
    events: list[tuple[str, str, int, Raw]]


_array_decoder = msgspec.json.Decoder(list[_EventIn])
_batch_decoder = msgspec.json.Decoder(_BatchIn)
_any_decoder = msgspec.json.Decoder()
_raw_fields_decoder = msgspec.json.Decoder(dict[str, Raw])
_raw_events_decoder = msgspec.json.Decoder(list[dict[str, Raw]])
_entry_decoder = msgspec.json.Decoder(_EntryOut)
_encoder = msgspec.json.Encoder()


def encode_spool_entry(received_at_us: int, rows: list[SpoolRow]) -> bytes:
    """The spool entry of one accepted request (the only place it is built)."""
    return _encoder.encode({"received_at": received_at_us, "events": rows})


def decode_spool_entry(value: bytes) -> tuple[int, list[SpoolRow]]:
    """(received_at µs, [(id_hex, key, timestamp µs, data as raw JSON)]) of one spool entry.

    Raises ValueError for an entry that is not in this shape.
    """
    try:
        entry = _entry_decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from exc
    return entry.received_at, entry.events


def spool_entry(
    body: bytes, *, batch: bool, now_us: int, max_events: int, max_event_bytes: int
) -> tuple[bytes, int]:
    """(spool entry, event count) of a valid request body; raises InvalidRequest (InvalidEvent,
    RequestTooLarge) saying what is wrong and where."""
    limits = {"batch": batch, "now_us": now_us, "max_events": max_events, "max_event_bytes": max_event_bytes}
    accepted = fast_spool_entry(body, **limits)  # type: ignore[arg-type]
    return accepted if accepted is not None else reference_spool_entry(body, **limits)  # type: ignore[arg-type]


def _proven_tree(body: bytes) -> tuple[bytes, Any] | None:
    """(canonical body, its decoded value) when the body is proven to hold nothing
    `jsontext` refuses, in C: it decodes (no 1e400, no lone surrogate, no giant integer) and
    its value encodes back to the very same bytes as its whitespace-free text (so no key
    appears twice: a dict keeps one of them, and the text would be longer). None means "not
    proven" (also for a number or string spelt another way, say 1E2 or \u00e9), not "invalid"."""
    try:
        tree = _any_decoder.decode(body)
        encoded = _encoder.encode(tree)
        if encoded == body:
            return body, tree
        # Whitespace is the usual difference (pretty-printed JSON): remove it and compare again.
        compact = canonical(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    return (compact, tree) if encoded == compact else None


def fast_spool_entry(
    body: bytes, *, batch: bool, now_us: int, max_events: int, max_event_bytes: int = 1 << 40
) -> tuple[bytes, int] | None:
    """Return (spool entry, event count) for a request body proven valid, or None to take the
    reference path."""
    # The whole body is decoded here (strings included), so its UTF-8 is checked too: an
    # acknowledged event never holds bytes the store cannot take as text.
    proven = _proven_tree(body)
    if proven is None:
        return None
    body, tree = proven
    try:
        events = _batch_decoder.decode(body).events if batch else _array_decoder.decode(body)
    except msgspec.DecodeError:  # ValidationError is a DecodeError
        return None
    trees: list[dict[str, Any]] = tree["events"] if batch else tree
    count = len(events)
    if count > max_events:
        return None
    # Containers outside the events' data: the body's array (and batch object), each event.
    outside_data = count + (2 if batch else 1)
    check_each_depth = body.count(b"{") + body.count(b"[") - outside_data > DEPTH_MAX
    # Below this many bytes of data, no event can be too large, whatever its key.
    surely_small = max_event_bytes - _KEY_MAX_BYTES - EVENT_OVERHEAD_BYTES
    first_id = uuid7_block(count) if 0 < count <= BLOCK_MAX else None
    rows: list[SpoolRow] = []
    for index, event in enumerate(events):
        # Printable (no Cc, Cf, Cs, Zl, Zp, nor any space but ' ') and not all spaces is a
        # subset of what check_key accepts; other keys are for the reference to judge.
        if not event.key.isprintable() or event.key.isspace():
            return None
        if event.id is not None:
            id_hex = event.id.replace("-", "").lower()
        elif first_id is not None:
            id_hex = f"{first_id + index:032x}"
        else:
            id_hex = f"{uuid7_int():032x}"
        if event.timestamp is None:
            timestamp_us = now_us
        else:
            try:
                timestamp_us = parse_rfc3339_us(event.timestamp)
            except ValueError:
                return None
        data_value = trees[index].get("data")
        if data_value is None:
            data = _EMPTY_OBJECT
        elif type(data_value) is dict:
            data = event.data
            if check_each_depth and not at_most_depth(data):
                return None
            if len(data) > surely_small and event_size_bytes(event.key, data) > max_event_bytes:
                return None
        else:
            return None
        rows.append((id_hex, event.key, timestamp_us, data))
    return encode_spool_entry(now_us, rows), count


def _data(raw: Raw) -> Raw | None:
    """An event's `data` as spooled: absent or null is {}; None when it is not an object."""
    view = memoryview(raw)
    if not view or (len(view) == 4 and view.tobytes() == b"null"):
        return _EMPTY_OBJECT
    return raw if view[0] == _OPEN_BRACE else None


def reference_spool_entry(
    body: bytes, *, batch: bool, now_us: int, max_events: int, max_event_bytes: int
) -> tuple[bytes, int]:
    """The reference rules: slower, and they say exactly what is wrong and where."""
    payload = parse_body(body, batch=batch)
    if batch:
        if not isinstance(payload, dict):
            shape_problem = problem(payload)
            raise InvalidRequest(f"body {shape_problem}" if shape_problem else 'body must be a JSON object {"events": [...]}')
        raw_events = payload.get("events")
        if not isinstance(raw_events, list):
            raise InvalidRequest('"events" must be a JSON array of events', field="events")
    else:
        if not isinstance(payload, list):
            raise InvalidRequest("body must be a JSON array of events")
        raw_events = payload
    if len(raw_events) > max_events:
        raise RequestTooLarge(
            f"too many events in one request: {len(raw_events)} (at most {max_events})", limit=max_events
        )
    events = normalize_events(raw_events, now_us)
    # Valid now, so msgspec can split the body into each event's raw `data` text.
    compact = canonical(body)
    if batch:
        compact = bytes(_raw_fields_decoder.decode(compact)["events"])
    rows: list[SpoolRow] = []
    for index, (event, fields) in enumerate(zip(events, _raw_events_decoder.decode(compact))):
        id_hex, key, timestamp_us, _ = event
        data = _data(fields.get("data", Raw(b"")))
        assert data is not None  # normalize_events checked it is an object
        size = event_size_bytes(key, data)
        if size > max_event_bytes:
            raise RequestTooLarge(
                f"event is {size} bytes (its data and key), more than {max_event_bytes}",
                index=index,
                limit=max_event_bytes,
            )
        rows.append((id_hex, key, timestamp_us, Raw(bytes(data))))
    return encode_spool_entry(now_us, rows), len(rows)


def parse_body(body: bytes, *, batch: bool = False) -> Any:
    """Parse a request body with `tlytics.jsontext.parse_checked`; raises InvalidRequest with
    the position of bad syntax, or InvalidEvent naming the event nested too deep."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("invalid JSON: the body is not UTF-8 text", position=exc.start) from None
    try:
        return parse_checked(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"invalid JSON: {exc.msg}", position=exc.pos) from None
    except RecursionError:
        # Deeper than Python's own reader goes, so far past DEPTH_MAX: say which event.
        index = _first_too_deep_event(body, batch=batch)
        message = f"data nests deeper than {DEPTH_MAX} levels"
        if index is None:
            raise InvalidRequest(f"JSON nests deeper than {DEPTH_MAX} levels") from None
        raise InvalidEvent(message, index=index, field="data") from None


def _first_too_deep_event(body: bytes, *, batch: bool) -> int | None:
    """Index of the first event nested too deep (events are the elements of the outermost
    array, or of the array at the second level of a batch object), or None."""
    event_level = 2 if batch else 1
    depth = 0
    index = 0
    in_string = escaped = False
    for byte in body:  # a byte loop over pathological input only: never on the usual paths
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > DEPTH_MAX + event_level + 1:  # the data's own level is the event's + 1
                return index
        elif byte in b"]}":
            depth -= 1
        elif byte == 0x2C and depth == event_level:  # a comma between two events
            index += 1
    return None
