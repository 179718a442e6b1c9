"""The server's spool entries: the one place their format is written and read.

A request's entry: `{"received_at": µs, "events": [[id, key, timestamp µs, data], ...]}` as
compact JSON, `id` as 32 hex digits, `data` as its canonical JSON text (see `tlytics.jsontext`),
embedded as it is. Both ingest paths build it with `encode_spool_entry`.

A spool entry holds one request's entry, or (a group entry) a JSON array of the entries of the
requests one group commit wrote, each keeping its own `received_at`: `group_spool_entries`
joins their bytes as they are (nothing decoded or encoded again). One spool row per group
instead of one per request: the writer reads, decodes and removes a row per group. A spool
written before group entries (one request per row) reads the same: `decode_spool_requests`,
`spool_entry_parts` and `store_rows` take both kinds. The writer and `tlytics-replay` read
entries with them, and `event_size_bytes` is the one definition of an event's size that
`--max-event-size` limits.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw, Struct

from tlytics.store import StoreRow

SpoolRow = tuple[str, str, int, Raw]  # (id as 32 hex digits, key, timestamp µs, canonical data)
SpooledRequest = tuple[int, list[SpoolRow]]  # (received_at µs, its events)
# An event's size: its canonical `data` text and its key in UTF-8, plus room for the id, the
# timestamp and the punctuation of its spool entry.
EVENT_OVERHEAD_BYTES = 64
# A group entry is cut into several (in the same transaction) past this many bytes: SQLite
# refuses a value of a gigabyte, and a writer batch holds whole entries in memory.
GROUP_ENTRY_MAX_BYTES = 8 * 1024 * 1024


def event_size_bytes(key: str, data: bytes) -> int:
    """The size of an event whose canonical `data` text is `data` (see EVENT_OVERHEAD_BYTES)."""
    return len(data) + len(key.encode("utf-8", "surrogatepass")) + EVENT_OVERHEAD_BYTES


class _Entry(Struct):
    received_at: int
    events: list[tuple[str, str, int, Raw]]


# A request's entry is a JSON object, a group entry an array of them: one decoder takes both.
_entries_decoder = msgspec.json.Decoder(_Entry | list[_Entry])
_entry_decoder = msgspec.json.Decoder(_Entry)
_parts_decoder = msgspec.json.Decoder(list[Raw])
_encoder = msgspec.json.Encoder()


def encode_spool_entry(received_at_us: int, rows: list[SpoolRow]) -> bytes:
    """The spool entry of one accepted request."""
    return _encoder.encode({"received_at": received_at_us, "events": rows})


def group_spool_entries(entries: list[bytes], max_bytes: int = GROUP_ENTRY_MAX_BYTES) -> list[bytes]:
    """The spool values that hold `entries` (requests' entries from `encode_spool_entry`), in
    their order: one group entry for all of them, or one per run of them up to `max_bytes` (an
    entry larger than that alone). A lone request's entry is written as it is."""
    values: list[bytes] = []
    run: list[bytes] = []
    run_bytes = 0
    for entry in entries:
        if run and run_bytes + len(entry) > max_bytes:
            values.append(_joined(run))
            run, run_bytes = [], 0
        run.append(entry)
        run_bytes += len(entry) + 1
    if run:
        values.append(_joined(run))
    return values


def _joined(entries: list[bytes]) -> bytes:
    return entries[0] if len(entries) == 1 else b"[" + b",".join(entries) + b"]"


def decode_spool_requests(value: bytes) -> list[SpooledRequest]:
    """The requests of one spool entry, either kind, in order: (received_at µs, [(id_hex,
    key, timestamp µs, data as raw JSON)]) each. Raises ValueError for an entry not in this
    shape (one bad request makes the whole group unreadable here: see spool_entry_parts)."""
    try:
        decoded = _entries_decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from exc
    if isinstance(decoded, list):
        return [(entry.received_at, entry.events) for entry in decoded]
    return [(decoded.received_at, decoded.events)]


def decode_spool_entry(value: bytes) -> SpooledRequest:
    """(received_at µs, events) of one request's entry (not a group entry).

    Raises ValueError for an entry that is not in this shape.
    """
    try:
        entry = _entry_decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from exc
    return entry.received_at, entry.events


def spool_entry_parts(value: bytes) -> list[bytes]:
    """The requests' entries a spool entry holds, as bytes, without reading them: the entry
    itself for a request's entry (or anything not an array), each element of a group entry. So
    one unreadable request of a group can be set aside alone. Raises ValueError for an array
    that is not JSON."""
    if not value.lstrip().startswith(b"["):
        return [value]
    try:
        return [bytes(part) for part in _parts_decoder.decode(value)]
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from exc


def store_rows(value: bytes) -> list[StoreRow]:
    """The store rows of one spool entry, either kind; `data` stays the text it was spooled as
    (never decoded and re-encoded). Raises ValueError for an entry that is not in this shape."""
    return [
        (bytes.fromhex(id_hex), key, timestamp_us, received_at_us, bytes(data).decode())
        for received_at_us, events in decode_spool_requests(value)
        for id_hex, key, timestamp_us, data in events
    ]
