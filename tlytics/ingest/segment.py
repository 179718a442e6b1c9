"""Segment's HTTP Tracking API: `POST /v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`,
`/v1/group`, `/v1/alias` (one message each), `/v1/batch` and `/v1/import` (`{"batch": [...]}`).

The write key comes as Segment's SDKs send it: the user of an HTTP Basic header, or `writeKey`
in the body (analytics.js); a Bearer header works too. Each message becomes one Tlytics event:
- key: the `event` of a track; `$page`, `$screen`, `$identify`, `$group`, `$alias` otherwise;
- id: `capture_common.message_uuid` of the `messageId` (a retried message is stored once);
  no messageId, no dedup: the server gives it a UUIDv7;
- timestamp: Segment's rule, `receivedAt - (sentAt - timestamp)` (the message's or the batch's
  `sentAt`); the `timestamp` as it is without a sentAt; the arrival time without a timestamp;
- data: `properties` (track, page, screen) or `traits` (identify, group) spread at the top,
  beside the message's other fields (`userId`, `anonymousId`, `context`, `messageId`, `name`,
  `category`, `groupId`, `previousId`, ...) except those used above or with no meaning here
  (`type`, `event`, `timestamp`, `originalTimestamp`, `sentAt`, `receivedAt`, `writeKey`,
  `integrations`, `_metadata`) and nulls. A property named like one of the kept fields keeps
  the properties whole under `properties` (or `traits`) instead of spreading them.
The answer is Segment's: 200 `{"success": true}` once every message is spooled; a request with
any bad message is refused whole, the error naming its `index` and `field` (with Segment's
`code` and `message` beside Tlytics' `error`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from tlytics.errors import InvalidEvent, InvalidRequest, RequestTooLarge
from tlytics.ingest.bodies import read_body
from tlytics.ingest.capture_common import (
    ERROR_CODES,
    Dialect,
    Handler,
    admit_header_key,
    answering_in,
    merged_data,
    message_uuid,
    object_field,
    rfc3339,
    skew_corrected_us,
    timestamp_us,
)
from tlytics.ingest.capture_work import Limits, Translated, batch_body, parse_messages, spool_translated, translate
from tlytics.ingest.responses import json_response

SOURCE = b"segment"
FIXED_KEYS = {"page": "$page", "screen": "$screen", "identify": "$identify", "group": "$group", "alias": "$alias"}
MESSAGE_TYPES = ("track", *FIXED_KEYS)
# What each type spreads at the top of its event's data.
_SPREAD = {"track": "properties", "page": "properties", "screen": "properties", "identify": "traits", "group": "traits"}
# Used for the key, id and timestamp, or with no meaning once stored (routing, transport).
_NOT_IN_DATA = frozenset(
    {"type", "event", "timestamp", "originalTimestamp", "sentAt", "receivedAt", "writeKey", "integrations", "_metadata"}
)
# What each type leaves out of its data's fields: the above, and what it spreads.
_LEFT_OUT = {spread: _NOT_IN_DATA | {spread} for spread in ("properties", "traits")} | {None: _NOT_IN_DATA}
# The fields a message of each type needs, besides userId or anonymousId.
_REQUIRED = {"track": ("event",), "group": ("groupId",), "alias": ("previousId",)}

SEGMENT = Dialect(
    field_names={"key": "event", "data": "properties", "id": "messageId"},
    error_fields=lambda status, message: {"code": ERROR_CODES.get(status, "error"), "message": message},
)
_SUCCESS = {"success": True}
# The batch-level fields a batch body is read for (its other fields are never built).
_BATCH_FIELDS = ("writeKey", "sentAt", "context")


def _message_event(
    message: Any, kind: str | None, index: int, *, batch_context: dict[str, Any], sent_at_us: int | None, now_us: int
) -> dict[str, Any]:
    """The Tlytics event of one Segment message (`kind`: the route's type, None in a batch)."""
    if not isinstance(message, dict):
        raise InvalidEvent("a message must be a JSON object", index=index)
    get = message.get
    kind = kind or get("type")
    if kind not in MESSAGE_TYPES:
        raise InvalidEvent(f"type must be one of {', '.join(MESSAGE_TYPES)}", index=index, field="type")
    assert isinstance(kind, str)
    if get("userId") is None and get("anonymousId") is None:
        raise InvalidEvent("a message needs a userId or an anonymousId", index=index, field="userId")
    for required in _REQUIRED.get(kind, ()):
        if get(required) is None:
            raise InvalidEvent(f"a {kind} message needs {required}", index=index, field=required)
    key = message["event"] if kind == "track" else FIXED_KEYS[kind]
    if not isinstance(key, str):
        raise InvalidEvent("event must be a string", index=index, field="event")
    message_id = get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise InvalidEvent("messageId must be a string", index=index, field="messageId")
    timestamp = get("timestamp")
    client_us = None if timestamp is None else timestamp_us(timestamp, index=index, field="timestamp")
    if get("sentAt") is not None:
        sent_at_us = timestamp_us(message["sentAt"], index=index, field="sentAt")
    spread_name = _SPREAD.get(kind)
    spread = object_field(message, spread_name, index) if spread_name else {}
    left_out = _LEFT_OUT[spread_name]
    fields = {name: value for name, value in message.items() if value is not None and name not in left_out}
    context = object_field(message, "context", index)
    if batch_context:
        fields["context"] = {**batch_context, **context}
    event: dict[str, Any] = {
        "key": key,
        "timestamp": rfc3339(now_us if client_us is None else skew_corrected_us(client_us, sent_at_us, now_us)),
        "data": merged_data(fields, spread, spread_name or "properties"),
    }
    if message_id is not None:
        event["id"] = message_uuid(SOURCE, message_id, client_us)
    return event


async def _receive(request: web.Request, kind: str | None) -> web.Response:
    header_key = admit_header_key(request)
    body = await read_body(request)
    now_us = time.time_ns() // 1000
    translated = await translate(request, translate_body, body, kind=kind, now_us=now_us, limits=Limits.of(request))
    await spool_translated(request, translated, header_key=header_key)
    return json_response(_SUCCESS)


def translate_body(body: bytes, *, kind: str | None, now_us: int, limits: Limits) -> Translated:
    """A Segment body's keys and `/batch` body (`kind`: the route's message type, None for a
    batch): on the loop for a small body, else on a body thread (`capture_work`)."""
    if kind is None:
        payload = parse_messages(body, list_field="batch", top_fields=_BATCH_FIELDS, list_at_top=False, limits=limits)
    else:
        payload = parse_messages(body, list_field=None, top_fields=(), list_at_top=False, limits=limits)
    messages = payload.get("batch") if kind is None and isinstance(payload, dict) else [payload]
    # The key before the shape: a caller without a key learns nothing about its body.
    tokens = [payload.get("writeKey")] if isinstance(payload, dict) else []
    if kind is None and isinstance(messages, list):
        tokens += [message.get("writeKey") for message in messages if isinstance(message, dict)]
    translated = Translated(tokens=[token for token in tokens if isinstance(token, str)])
    try:
        translated.batch_body = batch_body(_events(payload, messages, kind, now_us, limits))
    except InvalidRequest as exc:
        translated.refusal = exc
    return translated


def _events(payload: Any, messages: Any, kind: str | None, now_us: int, limits: Limits) -> list[dict[str, Any]]:
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object" + (' {"batch": [...]}' if kind is None else ""))
    if not isinstance(messages, list):
        raise InvalidRequest('"batch" must be a JSON array of messages', field="batch")
    sent_at_us = None
    if kind is None and payload.get("sentAt") is not None:
        sent_at_us = timestamp_us(payload["sentAt"], index=None, field="sentAt")
    batch_context = object_field(payload, "context", None) if kind is None else {}
    if batch_context and len(orjson.dumps(batch_context)) * len(messages) > limits.max_body_bytes:
        # Each event carries a copy: a large context times many messages is a body too large.
        raise RequestTooLarge(
            f"the batch's context, copied into each of its {len(messages)} messages, would be larger than"
            f" {limits.max_body_bytes} bytes",
            field="context",
            limit=limits.max_body_bytes,
            limit_of="bytes_per_body",
        )
    return [
        _message_event(message, kind, index, batch_context=batch_context, sent_at_us=sent_at_us, now_us=now_us)
        for index, message in enumerate(messages)
    ]


def _one_message(kind: str) -> Handler:
    @answering_in(SEGMENT)
    async def post_message(request: web.Request) -> web.Response:
        return await _receive(request, kind)

    post_message.__doc__ = f"POST /v1/{kind}: one Segment {kind} message."
    post_message.__name__ = post_message.__qualname__ = f"post_{kind}"
    return post_message


post_track = _one_message("track")
post_page = _one_message("page")
post_screen = _one_message("screen")
post_identify = _one_message("identify")
post_group = _one_message("group")
post_alias = _one_message("alias")


@answering_in(SEGMENT)
async def post_batch(request: web.Request) -> web.Response:
    """POST /v1/batch and /v1/import: `{"batch": [messages], "sentAt"?, "context"?, "writeKey"?}`."""
    return await _receive(request, None)
