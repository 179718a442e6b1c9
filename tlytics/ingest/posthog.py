"""PostHog's capture API: `POST /capture/`, `/batch/`, `/e/` and `/i/v0/e/`, as posthog-python,
posthog-js and PostHog's other SDKs send to them.

Bodies: one event (`{"event", "properties", ...}`), an array of events (posthog-js), or
`{"batch": [...]}` (posthog-python), as JSON; gzip by `Content-Encoding` or by
`?compression=gzip-js` (posthog-js, which says so in the query only, or nowhere: a body
starting with gzip's magic bytes is gzip); and, with CORS on, the
`text/plain` and `data=` form bodies browsers send (`?compression=base64`, or JSON text).
The key: `api_key` or `token` in the body, on an event, or as posthog-js puts it, in
`properties.token` (never stored); a Bearer header works too.
Each event becomes one Tlytics event:
- key: its `event` (`$pageview`, `$identify`, or the SDK user's own name);
- id: its `uuid` as it is (PostHog's own id for the event: a retried event is stored once);
  no uuid, no dedup: the server gives it a UUIDv7;
- timestamp: PostHog's rule: with `timestamp` and `sent_at` (in the body, or the `_` query
  parameter in ms), `now + (timestamp - sent_at)`; else `now - offset` ms when `offset` is
  given; else `timestamp`; else the arrival time;
- data: `properties` spread at the top (without `token`), beside `distinct_id` (the event's, or
  its properties') and the event's `$set` and `$set_once` when present; a property named like
  one of those keeps the properties whole under `properties` instead.
The answer is PostHog's: 200 `{"status": 1}` once spooled; a request with any bad event is
refused whole, naming its `index` and `field` (with PostHog's `detail` beside `error`).
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from tlytics.errors import InvalidEvent, InvalidRequest
from tlytics.events import UUID_PATTERN
from tlytics.ingest.bodies import read_body
from tlytics.ingest.capture_common import (
    ERROR_CODES,
    Dialect,
    admit_header_key,
    answering_in,
    form_data_json,
    merged_data,
    object_field,
    rfc3339,
    skew_corrected_us,
    timestamp_us,
)
from tlytics.ingest.capture_work import Limits, Translated, batch_body, parse_messages, spool_translated, translate
from tlytics.ingest.cors import cors_enabled
from tlytics.ingest.responses import json_response

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# Event fields kept beside the properties in the event's data.
_KEPT_FIELDS = ("$set", "$set_once")
# Properties that carry the key or move to the top: never spread into data.
_NOT_SPREAD = frozenset({"token", "api_key", "distinct_id"})

POSTHOG = Dialect(
    field_names={"key": "event", "data": "properties", "id": "uuid"},
    error_fields=lambda status, message: {
        "type": "validation_error" if status == 400 else "authentication_error" if status in (401, 403) else "error",
        "code": ERROR_CODES.get(status, "error"),
        "detail": message,
    },
)
_SUCCESS = {"status": 1}
_UUID = re.compile(UUID_PATTERN)
_GZIP_MAGIC = b"\x1f\x8b"
# The top-level fields a batch body is read for, beside its events (the others are never built).
_TOP_FIELDS = ("api_key", "token", "sent_at", "sentAt")


def _sent_at_us(top: dict[str, Any], query_ms: str) -> int | None:
    """When the client sent the request, by its clock: `sent_at` in the body, or posthog-js's
    `_` query parameter (ms since the epoch)."""
    for name in ("sent_at", "sentAt"):
        if top.get(name) is not None:
            return timestamp_us(top[name], index=None, field=name)
    return int(query_ms) * 1000 if query_ms.isdecimal() and len(query_ms) <= 15 else None


def _event(raw: Any, index: int, *, sent_at_us: int | None, now_us: int) -> dict[str, Any]:
    """The Tlytics event of one PostHog event."""
    if not isinstance(raw, dict):
        raise InvalidEvent("an event must be a JSON object", index=index)
    key = raw.get("event")
    if not isinstance(key, str):
        raise InvalidEvent("event must be a string, the event's name", index=index, field="event")
    properties = object_field(raw, "properties", index)
    distinct_id = raw.get("distinct_id", properties.get("distinct_id"))
    if distinct_id is None or isinstance(distinct_id, (dict, list, bool)):
        raise InvalidEvent("an event needs a distinct_id (a string)", index=index, field="distinct_id")
    fields: dict[str, Any] = {"distinct_id": distinct_id}
    fields.update((name, raw[name]) for name in _KEPT_FIELDS if raw.get(name) is not None)
    spread = (
        properties
        if _NOT_SPREAD.isdisjoint(properties)
        else {name: value for name, value in properties.items() if name not in _NOT_SPREAD}
    )
    event: dict[str, Any] = {"key": key, "data": merged_data(fields, spread, "properties")}
    client_us = None if raw.get("timestamp") is None else timestamp_us(raw["timestamp"], index=index, field="timestamp")
    offset_ms = raw.get("offset")
    if client_us is not None and sent_at_us is not None:
        event["timestamp"] = rfc3339(skew_corrected_us(client_us, sent_at_us, now_us))
    elif isinstance(offset_ms, int) and not isinstance(offset_ms, bool) and 0 <= offset_ms < 10**12:
        event["timestamp"] = rfc3339(now_us - offset_ms * 1000)
    else:
        event["timestamp"] = rfc3339(now_us if client_us is None else client_us)
    uuid = raw.get("uuid")
    if uuid is not None:
        if not isinstance(uuid, str) or not _UUID.match(uuid):
            raise InvalidEvent("uuid must be a UUID in its 36-character form", index=index, field="uuid")
        event["id"] = uuid
    return event


def _tokens(top: dict[str, Any], events: list[Any]) -> list[str]:
    """Every key the body names: at its top, on its events, in their properties."""
    holders = [top, *(event for event in events if isinstance(event, dict))]
    holders += [event["properties"] for event in holders[1:] if isinstance(event.get("properties"), dict)]
    return [holder[name] for holder in holders for name in ("api_key", "token") if isinstance(holder.get(name), str)]


async def _body(request: web.Request) -> bytes:
    compression = request.query.get("compression", "").lower()
    also_accept = (FORM_CONTENT_TYPE,) if cors_enabled(request.app) else ()
    coding = "gzip" if compression in ("gzip", "gzip-js") else None
    body = await read_body(request, also_accept=also_accept, content_coding=coding)
    if coding is None and body[:2] == _GZIP_MAGIC:
        # posthog-js gzips without saying so in some requests (no query parameter, no header):
        # JSON never starts with these bytes. aiohttp keeps the body read, so this reads no more.
        body = await read_body(request, also_accept=also_accept, content_coding="gzip")
    if request.content_type == FORM_CONTENT_TYPE:
        return form_data_json(body, base64_encoded=compression == "base64")
    return body


@answering_in(POSTHOG)
async def capture(request: web.Request) -> web.Response:
    """POST /capture/, /batch/, /e/, /i/v0/e/: one event, an array of them, or {"batch": [...]}."""
    header_key = admit_header_key(request)
    body = await _body(request)
    now_us = time.time_ns() // 1000
    query_ms = request.query.get("_", "")
    translated = await translate(
        request, translate_body, body, query_ms=query_ms, now_us=now_us, limits=Limits.of(request)
    )
    await spool_translated(request, translated, header_key=header_key)
    return json_response(_SUCCESS)


def translate_body(body: bytes, *, query_ms: str, now_us: int, limits: Limits) -> Translated:
    """A PostHog body's keys and `/batch` body: on the loop for a small body, else on a body
    thread (`capture_work`)."""
    payload = parse_messages(body, list_field="batch", top_fields=_TOP_FIELDS, list_at_top=True, limits=limits)
    top: dict[str, Any] = payload if isinstance(payload, dict) else {}
    if isinstance(payload, list):
        raw_events: Any = payload
    elif "batch" in top:
        raw_events = top["batch"]
    else:
        raw_events = [payload]
    # The key before the shape: a caller without a key learns nothing about its body.
    translated = Translated(tokens=_tokens(top, raw_events if isinstance(raw_events, list) else []))
    try:
        if not isinstance(raw_events, list):
            raise InvalidRequest('"batch" must be a JSON array of events', field="batch")
        if not isinstance(payload, (dict, list)):
            raise InvalidRequest('body must be an event, an array of events or {"batch": [...]}')
        sent_at_us = _sent_at_us(top, query_ms)
        events = [_event(raw, index, sent_at_us=sent_at_us, now_us=now_us) for index, raw in enumerate(raw_events)]
        translated.batch_body = batch_body(events)
    except InvalidRequest as exc:
        translated.refusal = exc
    return translated
