"""The msgspec fast path against the reference rules: it may accept only what the reference
accepts, and what both accept must be spooled identically."""

from __future__ import annotations

import orjson
import pytest

from tlytics.errors import InvalidEvent
from tlytics.events import normalize_events
from tlytics.ingest.codec import decode_spool_entry, fast_spool_entry

NOW_US = 1_756_116_000_000_000

BODIES = [
    b'[{"key": "a"}]',
    b'[{"key": "a", "data": {"x": [1, 2.5, {"y": null}], "s": "\\u00e9\\ud83d\\ude00"}}]',
    b'[ {"key":"a","data":null} , {"key":"b","data":{}} ]',
    b'[{"key": "a", "id": "0190F7C4-1234-7ABC-8DEF-0123456789AB", "timestamp": "2025-08-25T12:00:00.5+02:00"}]',
    b'[{"key": "a", "timestamp": null, "id": null}]',
    b"[]",
    b'[{"key": ""}]',
    b'[{"key": "line\\n"}]',
    b'[{"key": "trailing newline ok?\\n"}]',
    b'[{"key": "a", "id": "0190f7c4-1234-7abc-8def-0123456789ab\\n"}]',
    b'[{"key": "a", "data": [1]}]',
    b'[{"key": "a", "data": "text"}]',
    b'[{"key": "a", "data": 0}]',
    b'[{"key": "a", "timestamp": "2025-08-25T10:00:00"}]',
    b'[{"key": "a", "timestamp": 5}]',
    b'[{"key": "a", "extra": 1}]',
    b'[{"key": "a", "data": {"s": "\xff"}}]',
    b'[{"key": "a\xff"}]',
    b'[{"key": "a", "data": {"s": "\\ud800"}}]',
    b'[{"key": "a", "data": {"x": NaN}}]',
    b'[{"key": "a"},]',
    b'[{"key": "' + "é".encode() * 200 + b'"}]',
    b'[{"key": "' + "é".encode() * 201 + b'"}]',
    b'{"key": "a"}',
    b"null",
    b"",
]


def reference(body: bytes) -> list[list[object]] | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, list):
        return None
    try:
        return normalize_events(payload, NOW_US)
    except InvalidEvent:
        return None


@pytest.mark.parametrize("body", BODIES)
def test_fast_path_accepts_a_subset_of_the_reference_and_agrees_with_it(body: bytes) -> None:
    fast = fast_spool_entry(body, batch=False, now_us=NOW_US, max_events=10_000)
    expected = reference(body)
    if fast is None:
        return  # the reference decides; the handler tests check its answers
    assert expected is not None, "the fast path accepted what the reference rejects"
    entry, count = fast
    received_at, events = decode_spool_entry(entry)
    assert received_at == NOW_US and count == len(expected) == len(events)
    for (id_hex, key, ts, data), (ref_id, ref_key, ref_ts, ref_data) in zip(events, expected):
        assert (key, ts, orjson.loads(bytes(data))) == (ref_key, ref_ts, ref_data)
        assert len(id_hex) == 32
        if "id" in orjson.loads(body)[0] and orjson.loads(body)[0]["id"]:
            assert id_hex == ref_id


def test_fast_path_handles_most_valid_input() -> None:
    accepted = [b for b in BODIES[:6] if fast_spool_entry(b, batch=False, now_us=NOW_US, max_events=10) is not None]
    assert len(accepted) == 6


def test_batch_shape_and_event_limit() -> None:
    assert fast_spool_entry(b'{"events": [{"key": "a"}], "other": 1}', batch=True, now_us=1, max_events=5) is not None
    assert fast_spool_entry(b'{"evnts": []}', batch=True, now_us=1, max_events=5) is None
    assert fast_spool_entry(b'[{"key": "a"}, {"key": "b"}]', batch=False, now_us=1, max_events=1) is None


def test_generated_ids_are_distinct_and_increasing() -> None:
    body = orjson.dumps([{"key": "k"}] * 1000)
    fast = fast_spool_entry(body, batch=False, now_us=1, max_events=10_000)
    assert fast is not None
    ids = [event[0] for event in decode_spool_entry(fast[0])[1]]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(i[12] == "7" for i in ids)  # UUID version 7
