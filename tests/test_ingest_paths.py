"""The msgspec fast path against the reference rules: the fast path accepts only what the
reference accepts, both build byte-identical spool entries, and `data` is stored canonical
(whitespace removed, every other byte as sent) whichever path took the request."""

from __future__ import annotations

import json

import orjson
import pytest

from tlytics.errors import InvalidEvent, InvalidRequest, RequestTooLarge
from tlytics.ingest.fastpath import fast_spool_entry
from tlytics.ingest.validation import reference_spool_entry, spool_entry
from tlytics.spool.entry import EVENT_OVERHEAD_BYTES, decode_spool_entry, event_size_bytes

NOW_US = 1_756_116_000_000_000
ID = "0190f7c4-1234-7abc-8def-0123456789ab"

BODIES = [
    b'[{"key": "a"}]',
    b'[{"key": "a", "data": {"x": [1, 2.5, {"y": null}], "s": "\\u00e9\\ud83d\\ude00"}}]',
    b'[ {"key":"a","data":null} , {"key":"b","data":{}} ]',
    b'[{"key": "a", "id": "0190F7C4-1234-7ABC-8DEF-0123456789AB", "timestamp": "2025-08-25T12:00:00.5+02:00"}]',
    b'[{"key": "a", "timestamp": null, "id": null}]',
    b"[]",
    b'[{"key": "a", "data": {"n": 1E2, "big": 12345678901234567890123, "f": 1.50, "z": -0}}]',
    b'[{"key": ""}]',
    b'[{"key": "line\\n"}]',
    b'[{"key": "a", "id": "0190f7c4-1234-7abc-8def-0123456789ab\\n"}]',
    b'[{"key": "a", "data": [1]}]',
    b'[{"key": "a", "data": "text"}]',
    b'[{"key": "a", "timestamp": "2025-08-25T10:00:00"}]',
    b'[{"key": "a", "timestamp": "9999-12-31T23:59:59-12:00"}]',
    b'[{"key": "a", "extra": 1}]',
    b'[{"key": "a", "data": {"s": "\xff"}}]',
    b'[{"key": "a", "data": {"s": "\\ud800"}}]',
    b'[{"key": "a", "data": {"x": NaN}}]',
    b'[{"key": "a", "data": {"x": 1e400}}]',
    b'[{"key": "a", "data": {"a": 1, "a": 2}}]',
    b'[{"key": "a", "key": "b"}]',
    b'[{"key": "a\\u202eb"}]',
    b'[{"key": " \\u3000 "}]',
    b'[{"key": "a"},]',
    b'[{"key": "' + "é".encode() * 200 + b'"}]',
    b'[{"key": "' + "é".encode() * 201 + b'"}]',
    b'{"key": "a"}',
    b"null",
    b"",
]


def reference_or_none(body: bytes) -> tuple[bytes, int] | None:
    try:
        return reference_spool_entry(body, batch=False, now_us=NOW_US, max_events=10_000, max_event_bytes=1 << 20)
    except InvalidRequest as exc:
        assert exc.message
        return None


def without_generated_ids(entry: bytes) -> list[tuple[str, int, bytes]]:
    _, events = decode_spool_entry(entry)
    return [(key, ts, bytes(data)) for _, key, ts, data in events]


@pytest.mark.parametrize("body", BODIES)
def test_fast_path_accepts_a_subset_of_the_reference_and_spools_the_same(body: bytes) -> None:
    fast = fast_spool_entry(body, batch=False, now_us=NOW_US, max_events=10_000)
    reference = reference_or_none(body)
    if fast is None:
        return  # the reference decides; its answers are checked below and in test_validation
    assert reference is not None, "the fast path accepted what the reference rejects"
    assert fast[1] == reference[1]
    assert without_generated_ids(fast[0]) == without_generated_ids(reference[0])


def test_fast_path_handles_what_clients_send() -> None:
    events = [
        {"key": "café ☕ 漢字", "id": ID, "data": {"user": "u1", "n": 3, "f": 2.5, "s": "é 漢字", "l": [1, None]}}
    ]
    compact = orjson.dumps(events)
    pretty = json.dumps(events, ensure_ascii=False, indent=2).encode()  # whitespace only
    spaced = json.dumps(events, ensure_ascii=False).encode()  # Python's ", " and ": "
    entries = [fast_spool_entry(body, batch=False, now_us=NOW_US, max_events=10) for body in (compact, pretty, spaced)]
    assert all(entry is not None for entry in entries)
    assert len({entry[0] for entry in entries if entry is not None}) == 1, "whitespace changed the spooled bytes"


@pytest.mark.parametrize(
    "data_text, stored",
    [
        (b'{ "a" : [ 1 , 2 ] ,\n  "b" : { } }', b'{"a":[1,2],"b":{}}'),
        (b'{"n":1E2,"m":1e-400,"big":12345678901234567890123,"f":1.50,"z":-0}', None),
        (b'{"huge":' + b"9" * 4300 + b"}", None),
        (b'{"s":"\\u00e9\\/\\n","t":"caf\xc3\xa9"}', None),
        (b'{"s":"  spaces inside a string stay  "}', None),
    ],
)
def test_data_is_stored_canonical_with_every_token_as_sent(data_text: bytes, stored: bytes | None) -> None:
    body = b'[{"key":"k","id":"' + ID.encode() + b'","data":' + data_text + b"}]"
    entry, _ = spool_entry(body, batch=False, now_us=NOW_US, max_events=10, max_event_bytes=1 << 20)
    ((_, _, _, data),) = decode_spool_entry(entry)[1]
    assert bytes(data) == (stored if stored is not None else data_text)
    assert b"\n" not in bytes(data)
    assert json.loads(bytes(data)) == json.loads(data_text)


@pytest.mark.parametrize(
    "data_text, message",
    [
        (b'{"a":1,"a":2}', "has the key 'a' twice"),
        (b'{"a":{"b":[{"c":1,"c":1}]}}', "has the key 'c' twice"),
        (b'{"x":1e400}', "beyond a double's range"),
        (b'{"x":-1E309}', "beyond a double's range"),
        (b'{"x":' + b"9" * 4301 + b"}", "an integer of 4301 digits"),
        (b'{"x":NaN}', "has NaN, which is not JSON"),
        (b'{"x":-Infinity}', "has -Infinity, which is not JSON"),
        (b'{"x":"\\ud800"}', "not Unicode"),
        (b'{"\\udfff":1}', "not Unicode"),
        (b'{"x":' + b"[" * 128 + b"]" * 128 + b"}", "nests deeper than 128"),
        (b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}", "nests deeper than 128"),
    ],
)
def test_data_no_reader_can_take_back_is_refused_with_its_index(data_text: bytes, message: str) -> None:
    body = b'[{"key":"fine"},{"key":"k","data":' + data_text + b"}]"
    assert fast_spool_entry(body, batch=False, now_us=NOW_US, max_events=10) is None
    with pytest.raises(InvalidRequest) as caught:
        spool_entry(body, batch=False, now_us=NOW_US, max_events=10, max_event_bytes=1 << 20)
    assert message in caught.value.message
    assert caught.value.details == {"index": 1, "field": "data"}


def test_nesting_up_to_the_limit_is_accepted() -> None:
    data = b'{"x":' + b"[" * 127 + b"]" * 127 + b"}"  # the data object itself is level 1
    body = b'{"events":[{"key":"k","data":' + data + b"}]}"
    entry, count = spool_entry(body, batch=True, now_us=NOW_US, max_events=10, max_event_bytes=1 << 20)
    assert count == 1 and bytes(decode_spool_entry(entry)[1][0][3]) == data


def test_a_deep_batch_names_the_event() -> None:
    deep = b'{"events":[{"key":"a"},{"key":"b"},{"key":"c","data":{"x":' + b"[" * 3000 + b"]" * 3000 + b"}}]}"
    with pytest.raises(InvalidEvent) as caught:
        spool_entry(deep, batch=True, now_us=NOW_US, max_events=10, max_event_bytes=1 << 20)
    assert caught.value.details == {"index": 2, "field": "data"}


def test_a_field_given_twice_is_refused() -> None:
    with pytest.raises(InvalidEvent) as caught:
        spool_entry(
            b'[{"key":"a"},{"key":"a","key":"b"}]', batch=False, now_us=NOW_US, max_events=10, max_event_bytes=1 << 20
        )
    assert caught.value.index == 1 and "twice" in caught.value.message


def test_event_size_has_one_definition_on_both_paths() -> None:
    data = b'{"s":"' + b"x" * 1000 + b'"}'
    escaped = data.replace(b'"s"', b'"\\u0073"')  # the reference path keeps the escape
    assert event_size_bytes("k", data) == len(data) + 1 + EVENT_OVERHEAD_BYTES
    for data_text, stored in [(data, data), (b' {\n "s" :' + data[5:], data), (escaped, escaped)]:
        body = b'[{"key":"k","id":"' + ID.encode() + b'","data":' + data_text + b"}]"
        size = event_size_bytes("k", stored)
        entry, _ = spool_entry(body, batch=False, now_us=NOW_US, max_events=10, max_event_bytes=size)
        assert bytes(decode_spool_entry(entry)[1][0][3]) == stored
        with pytest.raises(RequestTooLarge) as caught:
            spool_entry(body, batch=False, now_us=NOW_US, max_events=10, max_event_bytes=size - 1)
        assert caught.value.details["index"] == 0


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
