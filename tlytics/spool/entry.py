"""The spool entry of an accepted request: the one place its format is written and read.

One entry per acknowledged request: `{"received_at": µs, "events": [[id, key, timestamp µs,
data], ...]}` as compact JSON, `id` as 32 hex digits, `data` as its canonical JSON text (see
`tlytics.jsontext`), embedded as it is. Both ingest paths build it with `encode_spool_entry`, the
writer and `tlytics-replay` read it with `decode_spool_entry`, and `event_size_bytes` is the one
definition of an event's size that `--max-event-size` limits.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw, Struct

from tlytics.store import StoreRow

SpoolRow = tuple[str, str, int, Raw]  # (id as 32 hex digits, key, timestamp µs, canonical data)
# An event's size: its canonical `data` text and its key in UTF-8, plus room for the id, the
# timestamp and the punctuation of its spool entry.
EVENT_OVERHEAD_BYTES = 64


def event_size_bytes(key: str, data: bytes) -> int:
    """The size of an event whose canonical `data` text is `data` (see EVENT_OVERHEAD_BYTES)."""
    return len(data) + len(key.encode("utf-8", "surrogatepass")) + EVENT_OVERHEAD_BYTES


class _Entry(Struct):
    received_at: int
    events: list[tuple[str, str, int, Raw]]


_entry_decoder = msgspec.json.Decoder(_Entry)
_encoder = msgspec.json.Encoder()


def encode_spool_entry(received_at_us: int, rows: list[SpoolRow]) -> bytes:
    """The spool entry of one accepted request."""
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


def store_rows(value: bytes) -> list[StoreRow]:
    """The store rows of one spool entry; `data` stays the text it was spooled as (never
    decoded and re-encoded). Raises ValueError for an entry that is not in this shape."""
    received_at_us, events = decode_spool_entry(value)
    return [
        (bytes.fromhex(id_hex), key, timestamp_us, received_at_us, bytes(data).decode())
        for id_hex, key, timestamp_us, data in events
    ]
