"""The ids and timestamps the capture routes derive (issue 23): a Segment message's id is a
v7-shaped UUIDv8 of its messageId and its own `timestamp`, so a retry is stored once.

What a retry looks like was read in analytics-python's source (segment/analytics, installed in
the venv): `Client._enqueue` fixes `timestamp` once, as an ISO string with milliseconds
(`timestamp.isoformat(timespec="milliseconds")`), and `messageId` (uuid4 when not given); the
consumer re-posts the same message dicts on a retry, and `request.post` stamps a fresh batch
`sentAt` on each attempt. So a retry has the same messageId and timestamp and another sentAt.
A message with the same messageId but another instant is a different message by our rule
(another id, stored beside the first): no Segment client sends one as a retry.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import app_flush
from tlytics.ingest.capture_common import _utc_timestamp_us, message_uuid
from tlytics.timefmt import parse_rfc3339_us

JSON = {"Content-Type": "application/json"}


def reference_message_uuid(source: bytes, message_id: str, client_timestamp_us: int | None) -> str:
    """The formula as first shipped (one 128-bit integer): the ids already stored follow it, so
    a message retried across an upgrade must keep its id."""
    digest = hashlib.sha256(source + b"\0" + message_id.encode("utf-8", "surrogatepass")).digest()
    hashed = int.from_bytes(digest[:16], "big")
    high_48 = hashed >> 80 if client_timestamp_us is None else (client_timestamp_us // 1000) & 0xFFFF_FFFF_FFFF
    value = high_48 << 80 | 0x8 << 76 | (hashed >> 64 & 0xFFF) << 64 | 0b10 << 62 | hashed & ((1 << 62) - 1)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@given(
    st.sampled_from([b"segment", b"posthog"]),
    st.text(),
    st.none() | st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999),
)
def test_message_uuid_keeps_the_ids_already_stored(source: bytes, message_id: str, client_us: int | None) -> None:
    assert message_uuid(source, message_id, client_us) == reference_message_uuid(source, message_id, client_us)


def test_message_uuid_is_pinned() -> None:
    assert message_uuid(b"segment", "msg-1", 1733572800250000) == "0193a0fd-aefa-8182-a10e-e3497d8df928"
    assert message_uuid(b"segment", "msg-1", None) == "a37565dc-827a-8182-a10e-e3497d8df928"


_digits = st.text("0123456789", min_size=1, max_size=10)


@given(
    st.tuples(
        st.integers(0, 10_000).map(lambda year: f"{year:04d}"),
        st.integers(0, 13).map(lambda month: f"{month:02d}"),
        st.integers(0, 32).map(lambda day: f"{day:02d}"),
        st.sampled_from(["T", "t", " ", "x"]),
        st.integers(0, 24).map(lambda hour: f"{hour:02d}"),
        st.integers(0, 60).map(lambda minute: f"{minute:02d}"),
        st.integers(0, 61).map(lambda second: f"{second:02d}"),
        st.none() | _digits | st.sampled_from(["", "٣", "1a"]),
        st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:30", "", "+00:0", "ZZ"]),
    )
)
def test_the_fast_timestamp_path_agrees_with_the_full_parser(parts: tuple[str, ...]) -> None:
    year, month, day, sep, hour, minute, second, fraction, offset = parts
    text = f"{year}-{month}-{day}{sep}{hour}:{minute}:{second}{'' if fraction is None else '.' + fraction}{offset}"
    try:
        expected: Any = parse_rfc3339_us(text)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: Any = _utc_timestamp_us(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected, text


def _track(message_id: str, timestamp: str) -> dict[str, Any]:
    return {"type": "track", "event": "e", "userId": "u", "messageId": message_id, "timestamp": timestamp}


async def _stored_ids(client: Any, app: web.Application) -> list[str]:
    await app_flush(app)
    response = await client.get("/view?page_size=1000")
    return [event["id"] for event in (await response.json())["events"]]


async def test_a_retry_with_another_sent_at_is_stored_once(aiohttp_client: Any, make_app: Any) -> None:
    """analytics-python's retry: the same messages, a later sentAt (and another offset for the
    same instant, or more digits of the same millisecond): one event each."""
    app = make_app()
    client = await aiohttp_client(app)
    first = {"batch": [_track("m-1", "2026-12-07T10:00:00.250Z")], "sentAt": "2026-12-07T10:00:01.000Z"}
    retries = [
        {**first, "sentAt": "2026-12-07T10:00:31.000Z"},
        {"batch": [_track("m-1", "2026-12-07T11:00:00.250+01:00")], "sentAt": "2026-12-07T10:01:00Z"},
        {"batch": [_track("m-1", "2026-12-07T10:00:00.250999Z")]},
    ]
    for body in (first, *retries):
        response = await client.post("/v1/batch", data=orjson.dumps(body), headers=JSON)
        assert response.status == 200
    assert await _stored_ids(client, app) == [
        message_uuid(b"segment", "m-1", parse_rfc3339_us("2026-12-07T10:00:00.250Z"))
    ]


async def test_the_same_message_id_at_another_instant_is_another_event(aiohttp_client: Any, make_app: Any) -> None:
    """Our decision: a messageId reused with another timestamp (1 ms apart) is not a retry
    (Segment's clients fix the timestamp when the message is made): both are stored."""
    app = make_app()
    client = await aiohttp_client(app)
    for timestamp in ("2026-12-07T10:00:00.250Z", "2026-12-07T10:00:00.251Z"):
        response = await client.post("/v1/track", data=orjson.dumps(_track("m-2", timestamp)), headers=JSON)
        assert response.status == 200
    ids = await _stored_ids(client, app)
    assert len(set(ids)) == 2
    assert {identifier[14:] for identifier in ids} == {message_uuid(b"segment", "m-2", None)[14:]}
