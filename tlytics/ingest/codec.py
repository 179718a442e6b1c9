"""The fast path of ingest: decode, validate and normalize a request in one pass, and build
its spool entry, with msgspec.

msgspec checks types, lengths and unknown fields in C while decoding, and keeps each event's
`data` as the raw JSON bytes it arrived as (`msgspec.Raw`): it is checked to be an object and
stored as it is, never decoded and re-encoded. Anything this path does not accept returns
None and the request goes through `tlytics.events`, the reference rules, which then says
precisely what is wrong and where; so this path may only ever accept a subset of what the
reference accepts, never more. One deliberate difference: a number inside `data` beyond a
double's range (say 1e400) is valid JSON and is kept verbatim here, where orjson would refuse it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Raw, Struct

from tlytics.events import KEY_MAX_CHARS, KEY_PATTERN, UUID_PATTERN
from tlytics.ids import BLOCK_MAX, uuid7_block, uuid7_int
from tlytics.timefmt import parse_rfc3339_us

_OPEN_BRACE = 0x7B
_EMPTY_OBJECT = Raw(b"{}")


class _EventIn(Struct, forbid_unknown_fields=True):
    key: Annotated[str, Meta(min_length=1, max_length=KEY_MAX_CHARS, pattern=KEY_PATTERN)]
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
_entry_decoder = msgspec.json.Decoder(_EntryOut)
_encoder = msgspec.json.Encoder()


def _data(raw: Raw) -> Raw | None:
    view = memoryview(raw)
    if not view or (len(view) == 4 and view.tobytes() == b"null"):
        return _EMPTY_OBJECT
    return raw if view[0] == _OPEN_BRACE else None


# Room for an event's other fields, so the size check here is never looser than the reference's.
_EVENT_OVERHEAD_BYTES = 512


def fast_spool_entry(
    body: bytes, *, batch: bool, now_us: int, max_events: int, max_event_bytes: int = 1 << 40
) -> tuple[bytes, int] | None:
    """Return (spool entry, event count) for a valid request body, or None to take the slow path."""
    try:
        # msgspec checks JSON syntax inside a Raw value but not its UTF-8: check it here, or an
        # acknowledged event could hold bytes the store cannot take as text.
        body.decode("utf-8")
        events = _batch_decoder.decode(body).events if batch else _array_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None
    count = len(events)
    if count > max_events:
        return None
    first_id = uuid7_block(count) if 0 < count <= BLOCK_MAX else None
    rows: list[tuple[str, str, int, Raw]] = []
    for index, event in enumerate(events):
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
        data = _data(event.data)
        if data is None or len(data) + len(event.key) + _EVENT_OVERHEAD_BYTES > max_event_bytes:
            return None
        rows.append((id_hex, event.key, timestamp_us, data))
    return _encoder.encode({"received_at": now_us, "events": rows}), count


def decode_spool_entry(value: bytes) -> tuple[int, list[tuple[str, str, int, Raw]]]:
    """(received_at µs, [(id_hex, key, timestamp µs, data as raw JSON)]) of one spool entry.

    Raises ValueError for an entry that is not in this shape.
    """
    try:
        entry = _entry_decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from exc
    return entry.received_at, entry.events
