"""The fast path against the reference rules on generated JSON text: whatever spelling a body
has (whitespace, escapes, number spellings, keys twice, fields in any order, null fields, data
too deep or too large), the fast path accepts only what the reference accepts, with the same
event count and byte-identical spool entries (ids given; generated ids aside)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tlytics.errors import InvalidRequest
from tlytics.ingest.fastpath import _one_decode_entry, _timestamp_us, fast_spool_entry
from tlytics.ingest.validation import reference_spool_entry
from tlytics.spool.entry import decode_spool_entry
from tlytics.timefmt import parse_rfc3339_us

NOW_US = 1_756_116_000_000_000
ID = "0190f7c4-1234-7abc-8def-0123456789ab"

_space = st.sampled_from(["", "", "", " ", "\n  ", "\t"])
_numbers = st.sampled_from(
    ["0", "-0", "1", "-7", "1.5", "1.50", "1E2", "1e2", "2.5e-3", "1e400", "12345678901234567890123", "0.1"]
) | st.integers().map(str)
_strings = (
    st.text(max_size=8).map(lambda text: json.dumps(text, ensure_ascii=False))
    | st.text(max_size=8).map(json.dumps)
    | st.sampled_from(['"\\ud800"', '"\\u00e9"', '"\\/"', '"a\\nb"', '"\\ud83d\\ude00"', '"é"'])
)
_scalars = _numbers | _strings | st.sampled_from(["true", "false", "null"])


def _joined(parts: list[str], opening: str, closing: str, space: str) -> str:
    return opening + space + ("," + space).join(parts) + space + closing


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    names = st.sampled_from(['"a"', '"b"', '"data"', '"\\u0061"', '"é"'])
    objects = st.builds(
        lambda pairs, space: _joined([f"{name}{space}:{space}{value}" for name, value in pairs], "{", "}", space),
        st.lists(st.tuples(names, children), max_size=4),
        _space,
    )
    arrays = st.builds(lambda items, space: _joined(items, "[", "]", space), st.lists(children, max_size=4), _space)
    return objects | arrays


_values = st.recursive(_scalars, _containers, max_leaves=12)
_data = (
    st.builds(
        lambda pairs: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}",
        st.lists(st.tuples(st.sampled_from(["user", "n", "path", "x"]), _values), max_size=4),
    )
    | _values
)
_keys = st.sampled_from(['"page_view"', '"a"', '""', '"line\\n"', '"café"', '"cafe\\u0301"', '"\\u00e9"', '" "']) | (
    st.text(min_size=1, max_size=6).map(lambda text: json.dumps(text, ensure_ascii=False))
)
_ids = st.sampled_from([f'"{ID}"', f'"{ID.upper()}"', '"not-an-id"', "null", f'"{ID}\\n"'])
_timestamps = st.sampled_from(
    [
        *['"2025-08-25T12:00:00.5+02:00"', '"2025-08-25T12:00:00.000000Z"', '"2025-08-25T10:00:00"', "null", "1"],
        *[
            '"2025-08-25T12:00:00.5Z"',
            '"2025-08-25T12:00:00Z"',
            '"2025-08-25T12:00:00.1234567Z"',
            '"2025-08-25T12:00:00z"',
        ],
        *[
            '"2016-12-31T23:59:60.5Z"',
            '"2025-13-01T00:00:00Z"',
            '"0000-01-01T00:00:00Z"',
            '"9999-12-31T23:59:59.999999Z"',
        ],
        *['"0001-01-01T00:00:00Z"', '"2025-02-29T00:00:00Z"', '"2025-08-25 12:00:00Z"', '"2025-08-25T12:00:00,5Z"'],
    ]
)


@st.composite
def _events(draw: st.DrawFn) -> str:
    fields = {"id": _ids, "key": _keys, "timestamp": _timestamps, "data": _data, "extra": _values}
    chosen = draw(st.lists(st.sampled_from(["id", "key", "key", "timestamp", "data", "data", "extra"]), max_size=5))
    if draw(st.booleans()):  # most events: the client's order, key always there
        chosen = [name for name in ("id", "key", "timestamp", "data") if name == "key" or name in chosen]
    space = draw(_space)
    pairs = [f'"{name}"{space}:{space}{draw(fields[name])}' for name in chosen]
    return _joined(pairs, "{", "}", space)


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    space = draw(_space)
    events = _joined(draw(st.lists(_events(), max_size=4)), "[", "]", space)
    batch = draw(st.booleans())
    if batch:
        events = draw(st.sampled_from(['{"events":%s}', '{"events":%s,"other":1}', '{ "events" : %s }'])) % events
    return events.encode("utf-8", "surrogatepass"), batch


def _reference(body: bytes, batch: bool, max_event_bytes: int) -> tuple[bytes, int] | None:
    try:
        return reference_spool_entry(body, batch=batch, now_us=NOW_US, max_events=3, max_event_bytes=max_event_bytes)
    except InvalidRequest as exc:
        assert exc.message
        return None


def _without_generated_ids(entry: bytes) -> list[tuple[str | None, str, int, bytes]]:
    _, events = decode_spool_entry(entry)
    return [(None if id_hex[12] == "7" else id_hex, key, ts, bytes(data)) for id_hex, key, ts, data in events]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies(), st.sampled_from([1 << 20, 1 << 20, 120, 160, 400]))
def test_the_fast_path_accepts_only_what_the_reference_accepts_and_spools_the_same(
    body_and_batch: tuple[bytes, bool], max_event_bytes: int
) -> None:
    body, batch = body_and_batch
    reference = _reference(body, batch, max_event_bytes)
    one_decode = _one_decode_entry(body, batch, NOW_US, 3, max_event_bytes)
    fast = fast_spool_entry(body, batch=batch, now_us=NOW_US, max_events=3, max_event_bytes=max_event_bytes)
    event(f"reference {'accepts' if reference else 'refuses'}; one decode {'accepts' if one_decode else 'passes'}")
    event(f"fast path {'accepts' if fast else 'passes'}")
    for accepted in (one_decode, fast):
        if accepted is None:
            continue  # the reference decides
        assert reference is not None, "the fast path accepted what the reference rejects"
        assert accepted[1] == reference[1]
        assert _without_generated_ids(accepted[0]) == _without_generated_ids(reference[0])


def test_the_usual_bodies_take_one_decode_and_spool_what_two_decodes_spooled() -> None:
    client_event = (
        '{"id":"' + ID + '","key":"page_view","timestamp":"2025-08-25T12:00:00.000000Z",'
        '"data":{"user":"u1","n":1,"f":2.5,"s":"é 漢字","l":[1,null,{"deep":[]}]}}'
    )
    bench_event = '{"key":"page_view","data":{"user_id":"u1","path":"/products/1","n":1}}'
    for text, batch in [
        (f"[{client_event},{bench_event}]", False),
        (f'{{"events":[{client_event},{bench_event}]}}', True),
        (f"[\n  {client_event.replace(',', ', ')}\n]", False),
    ]:
        body = text.encode()
        one_decode = _one_decode_entry(body, batch, NOW_US, 10, 1 << 20)
        assert one_decode is not None
        reference = _reference(body, batch, 1 << 20)
        assert reference is not None
        assert _without_generated_ids(one_decode[0]) == _without_generated_ids(reference[0])


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=9999),
    st.integers(min_value=0, max_value=13),
    st.integers(min_value=0, max_value=32),
    st.integers(min_value=0, max_value=24),
    st.integers(min_value=0, max_value=60),
    st.sampled_from(["", ".5", ".05", ".123456", ".000001", ".1234567"]),
    st.sampled_from(["Z", "z", "+00:00", "+02:00"]),
)
def test_usual_timestamps_read_as_the_reference_reads_them(
    year: int, month: int, day: int, hour: int, second: int, fraction: str, zone: str
) -> None:
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:59:{second:02d}{fraction}{zone}"
    try:
        expected: int | None = parse_rfc3339_us(text)
    except ValueError:
        expected = None
    try:
        fast: int | None = _timestamp_us(text)
    except ValueError:
        fast = None
    assert fast == expected
