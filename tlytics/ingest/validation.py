"""A request body in, its spool entry out: the fast path first, the reference rules second.

The reference rules (`tlytics.events` for events, `tlytics.jsontext` for the JSON inside them)
are slower and say precisely what is wrong and where, raising typed errors (`InvalidRequest`,
`InvalidEvent`, `RequestTooLarge`) that the HTTP layer maps to statuses in one place. Both paths
build the entry with `tlytics.spool.entry`, from the canonical `data` text.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from msgspec import Raw

from tlytics.errors import InvalidEvent, InvalidRequest, RequestTooLarge
from tlytics.events import normalize_events
from tlytics.ingest.fastpath import EMPTY_OBJECT, fast_spool_entry
from tlytics.jsontext import DEPTH_MAX, canonical, parse_checked, problem
from tlytics.spool.entry import EVENT_OVERHEAD_BYTES, SpoolRow, encode_spool_entry, event_size_bytes

_OPEN_BRACE = 0x7B
_raw_fields_decoder = msgspec.json.Decoder(dict[str, Raw])
_raw_events_decoder = msgspec.json.Decoder(list[dict[str, Raw]])
_key_decoder = msgspec.json.Decoder(str)
_JSON_SPACES = (b" ", b"\t", b"\n", b"\r")


def spool_entry(body: bytes, *, batch: bool, now_us: int, max_events: int, max_event_bytes: int) -> tuple[bytes, int]:
    """(spool entry, event count) of a valid request body; raises InvalidRequest (InvalidEvent,
    RequestTooLarge) saying what is wrong and where."""
    limits = {"batch": batch, "now_us": now_us, "max_events": max_events, "max_event_bytes": max_event_bytes}
    # Cheap checks first: the fast path decodes every value into a Python object, which costs
    # seconds on 10 MiB of `{}` that the size limits refuse in milliseconds.
    if may_be_too_large(body, max_events=max_events, max_event_bytes=max_event_bytes):
        refuse_too_large(body, batch=batch, max_events=max_events, max_event_bytes=max_event_bytes)
    accepted = fast_spool_entry(body, **limits)  # type: ignore[arg-type]
    return accepted if accepted is not None else reference_spool_entry(body, **limits)  # type: ignore[arg-type]


# The shortest JSON an event can be written in: {"key":"k"} and a comma.
_SHORTEST_EVENT_BYTES = 12


def may_be_too_large(body: bytes, *, max_events: int, max_event_bytes: int) -> bool:
    """Whether the body is long enough to hold too many events or an event too large."""
    return len(body) > min(max_event_bytes, max_events * _SHORTEST_EVENT_BYTES)


def _data(raw: Raw) -> Raw | None:
    """An event's `data` as spooled: absent or null is {}; None when it is not an object."""
    view = memoryview(raw)
    if not view or (len(view) == 4 and view.tobytes() == b"null"):
        return EMPTY_OBJECT
    return raw if view[0] == _OPEN_BRACE else None


def refuse_too_large(body: bytes, *, batch: bool, max_events: int, max_event_bytes: int) -> None:
    """Raise RequestTooLarge if the body holds too many events or an event too large, checked
    in C (msgspec, one pass) before anything decodes every value into Python objects: that
    costs seconds on 10 MiB of tiny objects, which the size limits refuse anyway. Says nothing
    of a body it cannot split into events: the reference rules will say what is wrong with it."""
    try:
        events_text = _raw_fields_decoder.decode(body)["events"] if batch else body
        events = _raw_events_decoder.decode(events_text)
    except (msgspec.DecodeError, KeyError, UnicodeDecodeError, RecursionError):
        return
    if len(events) > max_events:
        raise RequestTooLarge(
            f"too many events in one request: {len(events)} (at most {max_events})",
            limit=max_events,
            limit_of="events_per_request",
        )
    for index, fields in enumerate(events):
        data = _data(fields.get("data", Raw(b"")))
        # The data as sent is never shorter than its canonical text, and a key is at least a byte.
        if data is None or len(data) + 1 + EVENT_OVERHEAD_BYTES <= max_event_bytes:
            continue
        try:
            key = _key_decoder.decode(fields.get("key", Raw(b"null")))
        except msgspec.DecodeError:
            continue  # no string key: the reference rules refuse it for that
        if len(data) > 2 * max_event_bytes:
            # Far too large: whitespace is all canonical text removes, so the data without any
            # of it is a lower bound, counted without a second pass over its JSON.
            at_least = event_size_bytes(key, data) - sum(bytes(data).count(space) for space in _JSON_SPACES)
            if at_least > max_event_bytes:
                raise RequestTooLarge(
                    f"event is at least {at_least} bytes (its data and key), more than {max_event_bytes}",
                    index=index,
                    limit=max_event_bytes,
                    limit_of="bytes_per_event",
                )
        size = event_size_bytes(key, canonical(data))
        if size > max_event_bytes:
            raise RequestTooLarge(
                f"event is {size} bytes (its data and key), more than {max_event_bytes}",
                index=index,
                limit=max_event_bytes,
                limit_of="bytes_per_event",
            )


def reference_spool_entry(
    body: bytes, *, batch: bool, now_us: int, max_events: int, max_event_bytes: int
) -> tuple[bytes, int]:
    """The reference rules: slower, and they say exactly what is wrong and where."""
    if may_be_too_large(body, max_events=max_events, max_event_bytes=max_event_bytes):
        refuse_too_large(body, batch=batch, max_events=max_events, max_event_bytes=max_event_bytes)
    payload = parse_body(body, batch=batch)
    if batch:
        if not isinstance(payload, dict):
            shape_problem = problem(payload)
            raise InvalidRequest(
                f"body {shape_problem}" if shape_problem else 'body must be a JSON object {"events": [...]}'
            )
        raw_events = payload.get("events")
        if not isinstance(raw_events, list):
            raise InvalidRequest('"events" must be a JSON array of events', field="events")
    else:
        if not isinstance(payload, list):
            raise InvalidRequest("body must be a JSON array of events")
        raw_events = payload
    if len(raw_events) > max_events:
        raise RequestTooLarge(
            f"too many events in one request: {len(raw_events)} (at most {max_events})",
            limit=max_events,
            limit_of="events_per_request",
        )
    events = normalize_events(raw_events, now_us)
    # Valid now, so msgspec can split the body into each event's raw `data` text.
    compact = canonical(body)
    if batch:
        compact = bytes(_raw_fields_decoder.decode(compact)["events"])
    rows: list[SpoolRow] = []
    for index, (event, fields) in enumerate(zip(events, _raw_events_decoder.decode(compact), strict=True)):
        id_hex, key, timestamp_us, _ = event
        data = _data(fields.get("data", Raw(b"")))
        assert data is not None  # normalize_events checked it is an object
        size = event_size_bytes(key, data)
        if size > max_event_bytes:
            raise RequestTooLarge(
                f"event is {size} bytes (its data and key), more than {max_event_bytes}",
                index=index,
                limit=max_event_bytes,
                limit_of="bytes_per_event",
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
