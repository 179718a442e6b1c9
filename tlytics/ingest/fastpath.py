"""The fast path of ingest: a request body proven valid in C, or None.

The usual body (events with their fields in the client's order, no null field) is decoded once,
typed, and encoded back: when that gives the very same bytes as the body's whitespace-free text,
no key appears twice, every token is canonical, and msgspec has checked the UTF-8 (no 1e400, no
lone surrogate) and every event's fields and lengths; the spool entry encodes the same decoded
`data`, so it holds the body's own bytes. Any other body is proven by an untyped decode encoded
back, then its fields checked by a typed decode that keeps each event's `data` as the raw JSON
bytes it arrived as (`msgspec.Raw`). What this path cannot prove it leaves to the reference
rules (`tlytics.ingest.validation`): it may only ever accept a subset of what they accept, and
spools it to the same bytes — property tests check both (tests/test_fastpath_canonical.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw, Struct

from tlytics.events import KEY_MAX_CHARS, UUID_PATTERN
from tlytics.ids import BLOCK_MAX, uuid7_block, uuid7_int
from tlytics.jsontext import DEPTH_MAX, at_most_depth, canonical
from tlytics.spool.entry import EVENT_OVERHEAD_BYTES, SpoolRow, encode_spool_entry, event_size_bytes
from tlytics.timefmt import datetime_to_us, parse_rfc3339_us

EMPTY_OBJECT = Raw(b"{}")
# An event's key takes at most 4 bytes per character: below this, no event can be too large.
_KEY_MAX_BYTES = 4 * KEY_MAX_CHARS


class _EventIn(Struct, forbid_unknown_fields=True):
    # No `pattern` for the key: msgspec runs a Python regex per value, which cost more than
    # half of this path; `str.isprintable` in the loop below proves the same, in C.
    key: Annotated[str, Meta(min_length=1, max_length=KEY_MAX_CHARS)]
    id: Annotated[str, Meta(pattern=UUID_PATTERN)] | None = None
    timestamp: str | None = None
    data: Raw = Raw(b"")


class _BatchIn(Struct):
    events: list[_EventIn]


class _CanonicalEventIn(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    # The order the client library sends (bench bodies leave out id and timestamp): encoded
    # back, an event in this order gives its own text, so one decode is enough (see
    # _one_decode_entry). `data` decoded (not Raw), so its encoding proves it canonical too.
    id: Annotated[str, Meta(pattern=UUID_PATTERN)] | None = None
    key: Annotated[str, Meta(min_length=1, max_length=KEY_MAX_CHARS)]
    timestamp: str | None = None
    data: dict[str, Any] | None = None


class _CanonicalBatchIn(Struct, forbid_unknown_fields=True):
    events: list[_CanonicalEventIn]


# The timestamps the client library sends (`format_rfc3339_us`): UTC, `Z`, a fraction of at
# most six digits. `datetime.fromisoformat` reads these in C as parse_rfc3339_us does (and
# refuses :60, month 13, year 0 as it does); a 4-digit year in UTC is always in range.
_USUAL_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")


def _timestamp_us(text: str) -> int:
    """parse_rfc3339_us(text), read in C for the usual timestamps. Raises ValueError."""
    if _USUAL_TIMESTAMP.fullmatch(text):
        return datetime_to_us(datetime.fromisoformat(text))
    return parse_rfc3339_us(text)


# The last four hex digits of every 16-bit number: a request's ids differ only there (below).
_HEX4: list[str] = []


def _block_ids(first_id: int, count: int) -> list[str]:
    """The ids `first_id + i` (i < count) as 32 hex digits each. A block starts at a multiple
    of BLOCK_MAX (2**14), so its ids share all but their last four hex digits: one prefix and a
    table lookup per id, where formatting each 128-bit integer cost a quarter of this path."""
    if count == 1:
        return [f"{first_id:032x}"]
    if not _HEX4:
        _HEX4.extend(f"{low:04x}" for low in range(1 << 16))
    prefix = f"{first_id >> 16:028x}"
    low = first_id & 0xFFFF
    return [prefix + digits for digits in _HEX4[low : low + count]]


_array_decoder = msgspec.json.Decoder(list[_EventIn])
_batch_decoder = msgspec.json.Decoder(_BatchIn)
_canonical_array_decoder = msgspec.json.Decoder(list[_CanonicalEventIn])
_canonical_batch_decoder = msgspec.json.Decoder(_CanonicalBatchIn)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


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
    return (_usual_order(body) and _one_decode_entry(body, batch, now_us, max_events, max_event_bytes)) or (
        _two_decode_entry(body, batch, now_us, max_events, max_event_bytes)
    )


def _usual_order(body: bytes) -> bool:
    """Whether the body's first event (the first object after its first `[`) starts with `id` or
    `key`: a body in another order would pay a typed decode and an encode for nothing (1.6x
    on a body with `data` first). Only a guess: either path's answer is right."""
    start = body.find(b"{", body.find(b"["))
    return start < 0 or body.startswith((b'"id"', b'"key"'), body.find(b'"', start))


def _one_decode_entry(
    body: bytes, batch: bool, now_us: int, max_events: int, max_event_bytes: int
) -> tuple[bytes, int] | None:
    """The usual body, in one typed decode: its events in _CanonicalEventIn's field order, no
    null field, `data` an object, no deep nesting. Its typed value encodes back to the body's
    whitespace-free text, which proves what _proven_tree proves (a struct keeps one of a
    field given twice, as a dict does) and the events' fields and lengths at once; the spool
    entry encodes the same decoded `data`, so it holds the very bytes of the body's. None:
    not proven this way (the two-decode path then tries)."""
    try:
        if batch:
            value: Any = _canonical_batch_decoder.decode(body)
            events: list[_CanonicalEventIn] = value.events
        else:
            value = events = _canonical_array_decoder.decode(body)
        encoded = _encoder.encode(value)
        if encoded != body:
            # Not shorter, `encoded` cannot be the body with its whitespace removed.
            if len(encoded) >= len(body):
                return None
            body = canonical(body)
            if encoded != body:
                return None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None
    count = len(events)
    # Each event's data is a part of the body: the body's length bounds its size, and the
    # body's containers bound its depth. Either check needing the data's own text: not here.
    outside_data = count + (2 if batch else 1)
    if (
        count > max_events
        or len(body) > max_event_bytes - _KEY_MAX_BYTES - EVENT_OVERHEAD_BYTES
        or body.count(b"{") + body.count(b"[") - outside_data > DEPTH_MAX
    ):
        return None
    datas = [EMPTY_OBJECT if event.data is None else event.data for event in events]
    rows = _spool_rows(events, datas, now_us)
    return None if rows is None else (encode_spool_entry(now_us, rows), count)


def _two_decode_entry(
    body: bytes, batch: bool, now_us: int, max_events: int, max_event_bytes: int
) -> tuple[bytes, int] | None:
    """Any other body: proven canonical by an untyped decode, its fields checked by a typed
    one that keeps each event's `data` as the raw JSON bytes it arrived as."""
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
    datas: list[Raw] = []
    for index, event in enumerate(events):
        data_value = trees[index].get("data")
        if data_value is None:
            data = EMPTY_OBJECT
        elif type(data_value) is dict:
            data = event.data
            if check_each_depth and not at_most_depth(data):
                return None
            if len(data) > surely_small and event_size_bytes(event.key, data) > max_event_bytes:
                return None
        else:
            return None
        datas.append(data)
    rows = _spool_rows(events, datas, now_us)
    return None if rows is None else (encode_spool_entry(now_us, rows), count)


def _spool_rows(events: Sequence[_EventIn | _CanonicalEventIn], datas: list[Any], now_us: int) -> list[SpoolRow] | None:
    """The spool rows of events whose fields msgspec checked and whose `data` (one per event,
    canonical) is proven: their keys checked, their ids and timestamps made. None: a key or a
    timestamp the reference is to judge."""
    count = len(events)
    block_ids = _block_ids(uuid7_block(count), count) if 0 < count <= BLOCK_MAX else None
    # A request's events mostly share a few keys: each distinct key is checked once.
    proven_keys: set[str] = set()
    rows: list[SpoolRow] = []
    for index, event in enumerate(events):
        # Printable (no Cc, Cf, Cs, Zl, Zp, nor any space but ' '), not all spaces and in NFC
        # is a subset of what check_key accepts; other keys are for the reference to judge.
        key = event.key
        if key not in proven_keys:
            if not key.isprintable() or key.isspace() or not (key.isascii() or unicodedata.is_normalized("NFC", key)):
                return None
            proven_keys.add(key)
        if event.id is not None:
            id_hex = event.id.replace("-", "").lower()
        elif block_ids is not None:
            id_hex = block_ids[index]
        else:
            id_hex = f"{uuid7_int():032x}"
        if event.timestamp is None:
            timestamp_us = now_us
        else:
            try:
                timestamp_us = _timestamp_us(event.timestamp)
            except ValueError:
                return None
        rows.append((id_hex, key, timestamp_us, datas[index]))
    return rows
