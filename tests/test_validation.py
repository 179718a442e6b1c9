"""Every bad input gets a 4xx JSON error that says what and where, and changes nothing."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import app_flush, make_client, spool_count, store_count

GOOD = {"key": "ok"}

# (body, expected error substring, index, field)
BAD_EVENTS: list[tuple[Any, str, int | None, str | None]] = [
    ([GOOD, "not an object"], "must be a JSON object", 1, None),
    ([GOOD, 42], "must be a JSON object", 1, None),
    ([GOOD, {"data": {}}], "key is required", 1, "key"),
    ([{"key": ""}], "must not be empty", 0, "key"),
    ([{"key": "x" * 201}], "longer than 200", 0, "key"),
    ([{"key": 7}], "must be a string", 0, "key"),
    ([{"key": ["a"]}], "must be a string", 0, "key"),
    ([{"key": "tab\there"}], "control characters", 0, "key"),
    ([{"key": "nul\u0000"}], "control characters", 0, "key"),
    ([GOOD, GOOD, {"key": "a", "data": [1, 2]}], "data must be a JSON object", 2, "data"),
    ([{"key": "a", "data": "text"}], "data must be a JSON object", 0, "data"),
    ([{"key": "a", "timestamp": "yesterday"}], "RFC 3339", 0, "timestamp"),
    ([{"key": "a", "timestamp": "2025-08-25 10:00"}], "RFC 3339", 0, "timestamp"),
    ([{"key": "a", "timestamp": "2025-08-25T10:00:00"}], "RFC 3339", 0, "timestamp"),
    ([{"key": "a", "timestamp": "2025-13-40T10:00:00Z"}], "timestamp", 0, "timestamp"),
    ([{"key": "a", "timestamp": 1724580000}], "RFC 3339", 0, "timestamp"),
    ([{"key": "a", "id": "not-a-uuid"}], "UUID", 0, "id"),
    ([{"key": "a", "id": 12345}], "UUID", 0, "id"),
    ([{"key": "a", "id": "0190f7c41234-7abc-8def-0123456789ab0"}], "UUID", 0, "id"),
    ([{"key": "a", "timestmap": "2025-08-25T10:00:00Z"}], "unknown field 'timestmap'", 0, "timestmap"),
    # Keys that look like other keys, or like nothing at all.
    ([GOOD, {"key": "admin\u202egnp.exe"}], "U+202E", 1, "key"),
    ([{"key": "zero\u200bwidth"}], "U+200B", 0, "key"),
    ([{"key": "\ufeffbom"}], "U+FEFF", 0, "key"),
    ([{"key": "line\u2028sep"}], "U+2028", 0, "key"),
    ([{"key": "para\u2029sep"}], "U+2029", 0, "key"),
    ([{"key": "soft\u00adhyphen"}], "U+00AD", 0, "key"),
    ([{"key": " \u3000\u00a0 "}], "only whitespace", 0, "key"),
    # Spelt otherwise but alike (issue 19): both spellings would count as two keys.
    ([GOOD, {"key": "cafe\u0301"}], "NFC", 1, "key"),
    ([{"key": "sign\u00a0up"}], "U+00A0", 0, "key"),
    ([{"key": "sign\u202fup"}], "U+202F", 0, "key"),
    # Timestamps whose UTC instant falls outside the years 0001-9999 could not be printed back.
    ([GOOD, {"key": "a", "timestamp": "9999-12-31T23:59:59-12:00"}], "0001-9999", 1, "timestamp"),
    ([{"key": "a", "timestamp": "9999-12-31T23:30:00-00:31"}], "0001-9999", 0, "timestamp"),
    ([{"key": "a", "timestamp": "0001-01-01T00:00:00+00:01"}], "0001-9999", 0, "timestamp"),
    ([{"key": "a", "timestamp": "0000-12-31T23:59:59Z"}], "timestamp", 0, "timestamp"),
    # A leap second and an offset of 24 hours: said plainly (the offset was a Python repr).
    ([GOOD, {"key": "a", "timestamp": "2016-12-31T23:59:60Z"}], "leap second", 1, "timestamp"),
    ([{"key": "a", "timestamp": "2025-01-01T00:00:00+24:00"}], "offset +24:00 is beyond", 0, "timestamp"),
    ([{"key": "a", "timestamp": "2025-01-01T00:00:00-00:60"}], "offset -00:60 is beyond", 0, "timestamp"),
    ([{"key": "a", "timestamp": "2025-02-30T00:00:00Z"}], "day is out of range", 0, "timestamp"),
]


@pytest.mark.parametrize("path", ["/events", "/batch"])
@pytest.mark.parametrize(("events", "message", "index", "field"), BAD_EVENTS)
async def test_bad_event_rejects_whole_request(
    client: Any, app: web.Application, path: str, events: Any, message: str, index: int | None, field: str | None
) -> None:
    body = events if path == "/events" else {"events": events}
    response = await client.post(path, json=body)
    assert response.status == 400
    error = await response.json()
    assert message in error["error"]
    assert "timedelta" not in error["error"]  # no Python repr in an answer
    assert error.get("index") == index
    assert error.get("field") == field
    # Nothing of the request was spooled, so nothing can reach the store.
    assert spool_count(app) == 0
    await app_flush(app)
    assert store_count(app) == 0


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        ("/events", b'[{"key": "a"', "invalid JSON"),
        ("/events", b"", "invalid JSON"),
        ("/events", b"\xff\xfe", "invalid JSON"),
        ("/events", b'{"events": []}', "JSON array"),
        ("/events", b'"just a string"', "JSON array"),
        ("/batch", b"[]", "JSON object"),
        ("/batch", b'{"evnts": []}', '"events" must be a JSON array'),
        ("/batch", b'{"events": {"key": "a"}}', '"events" must be a JSON array'),
        ("/batch", b"{bad json}", "invalid JSON"),
        ("/events", b"[NaN]", "NaN, which is not JSON"),
    ],
)
async def test_malformed_bodies_are_400(client: Any, app: web.Application, path: str, raw: bytes, message: str) -> None:
    response = await client.post(path, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert spool_count(app) == 0


async def test_invalid_json_reports_position(client: Any) -> None:
    response = await client.post("/events", data=b'[{"key": "a"},, ]', headers={"Content-Type": "application/json"})
    body = await response.json()
    assert response.status == 400
    assert isinstance(body["position"], int) and body["position"] > 0


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream"]
)
async def test_non_json_content_type_is_415(client: Any, app: web.Application, content_type: str) -> None:
    response = await client.post("/events", data=b'[{"key": "a"}]', headers={"Content-Type": content_type})
    assert response.status == 415
    body = await response.json()
    assert content_type in body["error"]
    assert body["field"] == "Content-Type"
    assert spool_count(app) == 0


async def test_json_content_type_with_charset_and_suffix_is_accepted(client: Any) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.tlytics+json"):
        response = await client.post("/events", data=b'[{"key": "a"}]', headers={"Content-Type": content_type})
        assert response.status == 200, content_type


async def test_body_over_limit_is_413_json(client: Any, app: web.Application) -> None:
    too_big = b'[{"key": "a", "data": {"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}}]'
    response = await client.post("/events", data=too_big, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert "larger than" in (await response.json())["error"]
    assert spool_count(app) == 0


async def test_too_many_events_is_413(client: Any, app: web.Application) -> None:
    response = await client.post("/events", json=[GOOD] * 10_001)
    assert response.status == 413
    assert "too many events" in (await response.json())["error"]
    assert spool_count(app) == 0


async def test_unsupported_content_encoding_is_a_415_naming_it(client: Any, app: web.Application) -> None:
    response = await client.post(
        "/events",
        data=gzip.compress(b'[{"key": "a"}]'),
        headers={"Content-Type": "application/json", "Content-Encoding": "br"},
    )
    assert response.status == 415
    error = await response.json()
    assert "br" in error["error"] and error["field"] == "Content-Encoding"
    assert spool_count(app) == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'[{"key": "a", "data": {"s": "\xff"}}]', "invalid JSON"),
        (b'[{"key": "bad\xfe"}]', "invalid JSON"),
        (b'[{"key": "a\\n"}]', "control characters"),
        (b'[{"key": "a", "id": "0190f7c4-1234-7abc-8def-0123456789ab\\n"}]', "UUID"),
    ],
)
async def test_invalid_utf8_and_trailing_newlines_are_refused(
    client: Any, app: web.Application, raw: bytes, message: str
) -> None:
    response = await client.post("/events", data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert spool_count(app) == 0


# JSON that no reader could take back as it was meant, sent as raw text (a JSON library would
# not write it). Each is refused on both paths, naming the event and the field.
UNREADABLE_DATA = [
    (b'{"a":1,"a":2}', "has the key 'a' twice"),
    (b'{"a":{"b":true,"b":false}}', "has the key 'b' twice"),
    (b'{"n":1e400}', "beyond a double's range"),
    (b'{"n":[1,-1.5E999]}', "beyond a double's range"),
    (b'{"n":NaN}', "NaN, which is not JSON"),
    (b'{"s":"\\udc00 lone"}', "not Unicode"),
    (b'{"x":' + b"[" * 200 + b"]" * 200 + b"}", "nests deeper than 128"),
    (b'{"x":' + b'{"y":' * 995 + b"1" + b"}" * 995 + b"}", "nests deeper than 128"),
    (b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper than 128"),
]


@pytest.mark.parametrize("path", ["/events", "/batch"])
@pytest.mark.parametrize(("data", "message"), UNREADABLE_DATA)
async def test_unreadable_data_is_refused_with_index_and_nothing_is_kept(
    client: Any, app: web.Application, path: str, data: bytes, message: str
) -> None:
    events = b'[{"key":"ok"},{"key":"ok2","data":{"fine":1}},{"key":"bad","data":' + data + b"}]"
    body = events if path == "/events" else b'{"events":' + events + b"}"
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400, await response.text()
    error = await response.json()
    assert message in error["error"]
    assert (error["index"], error["field"]) == (2, "data")
    assert spool_count(app) == 0


async def test_an_event_field_given_twice_is_refused(client: Any, app: web.Application) -> None:
    body = b'[{"key":"ok"},{"key":"signup","key":"payment"}]'
    response = await client.post("/events", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = await response.json()
    assert "'key' twice" in error["error"] and (error["index"], error["field"]) == (1, "key")
    assert spool_count(app) == 0


async def test_the_field_given_twice_is_named_on_batch_too(client: Any, app: web.Application) -> None:
    stamp = '"timestamp":"2026-01-01T00:00:00Z"'
    body = f'{{"events":[{{"key":"a"}},{{"key":"b"}},{{"key":"c",{stamp},{stamp}}}]}}'.encode()
    response = await client.post("/batch", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = await response.json()
    assert "'timestamp' twice" in error["error"] and (error["index"], error["field"]) == (2, "timestamp")
    assert spool_count(app) == 0


async def test_nesting_at_the_limit_is_accepted(client: Any, app: web.Application) -> None:
    data = b'{"x":' + b"[" * 127 + b"]" * 127 + b"}"
    response = await client.post(
        "/events", data=b'[{"key":"deep","data":' + data + b"}]", headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()


async def test_a_deep_lookup_body_is_a_400(client: Any) -> None:
    body = b'{"ids":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    response = await client.post("/lookup", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert "nests deeper" in (await response.json())["error"]


def test_every_refused_key_character_class_is_complete() -> None:
    import re
    import sys
    import unicodedata

    from tlytics.events import _REFUSED_KEY_CHARS, REFUSED_KEY_CATEGORIES

    if unicodedata.unidata_version != "14.0.0":
        pytest.skip(f"the refused list is Unicode 14's; this Python has {unicodedata.unidata_version}")
    missing = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in REFUSED_KEY_CATEGORIES and not _REFUSED_KEY_CHARS.match(chr(code))
    ]
    wrongly = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if _REFUSED_KEY_CHARS.match(chr(code)) and unicodedata.category(chr(code)) not in REFUSED_KEY_CATEGORIES
    ]
    assert missing == [] and wrongly == []
    assert re.match(r"\w", "é")  # letters of every script stay allowed


async def test_a_composed_key_is_accepted_as_sent(client: Any, app: web.Application) -> None:
    response = await client.post("/events", json=[{"key": "caf\u00e9 \u2014 ok"}])
    assert response.status == 200


async def test_one_event_over_the_size_limit_is_413_with_its_index(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client, app = await make_client(aiohttp_client, make_app, max_event_bytes=2000)
    events = [{"key": "small"}, {"key": "big", "data": {"pad": "x" * 3000}}]
    response = await client.post("/events", json=events)
    assert response.status == 413
    body = await response.json()
    assert body["index"] == 1 and body["limit"] == 2000 and body["limit_of"] == "bytes_per_event"
    assert spool_count(app) == 0
    ok = await client.post("/events", json=[{"key": "fine", "data": {"pad": "x" * 500}}])
    assert ok.status == 200


async def test_event_count_limit_is_configurable(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    client, _ = await make_client(aiohttp_client, make_app, max_events_per_request=3)
    assert (await client.post("/events", json=[{"key": "a"}] * 3)).status == 200
    response = await client.post("/events", json=[{"key": "a"}] * 4)
    assert response.status == 413
    body = await response.json()
    assert body["limit"] == 3 and body["limit_of"] == "events_per_request"
