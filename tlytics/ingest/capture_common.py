"""What the routes of other SDKs' capture APIs (`segment`, `posthog`) share: where their key
comes from, the ids and timestamps they derive, how their messages reach the one accept path,
and the error answers their clients can read.

Each of those routes translates its body into a Tlytics `/batch` body and hands it to
`accept.spool_body`, so its events pass the same rules (key, sizes, depth), the same spool and
the same acknowledgement as `/batch`: the 200 goes out once they are committed, and a request
with any bad message is refused whole, nothing stored.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from tlytics.errors import InvalidEvent, InvalidRequest
from tlytics.ingest.auth import admit_key, bearer_token
from tlytics.ingest.error_answers import error_answer
from tlytics.ingest.responses import ApiError, json_response
from tlytics.ingest.validation import parse_body
from tlytics.jsontext import problem
from tlytics.timefmt import check_in_range_us, format_rfc3339_us, parse_rfc3339_us

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def message_uuid(source: bytes, message_id: str, client_timestamp_us: int | None) -> str:
    """The Tlytics id of a message another SDK named `message_id`: a UUIDv8 (RFC 9562's custom
    layout) shaped like a UUIDv7, its first 48 bits the message's own timestamp in ms (as the
    client sent it: a retry sends the same, so it gets the same id) and the other 74 free bits
    from SHA-256 of `source` and the message id. So a retried message is stored once, and ids
    still sort by time: the store's unique index stays append-mostly, as with v7 (random ids
    make SQLite inserts ~10x slower). Without a timestamp all 122 bits come from the hash.
    Built from bytes, not one 128-bit integer: the same bits, in a third of the time."""
    digest = hashlib.sha256(source + b"\0" + message_id.encode("utf-8", "surrogatepass")).digest()
    if client_timestamp_us is None:
        high = digest[:6]
    else:
        high = ((client_timestamp_us // 1000) & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
    # Version 8 in the top nibble of byte 6, the RFC's variant (0b10) in the top bits of byte 8.
    text = (high + bytes((0x80 | digest[6] & 0x0F, digest[7], 0x80 | digest[8] & 0x3F)) + digest[9:16]).hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def skew_corrected_us(client_us: int, sent_at_us: int | None, received_us: int) -> int:
    """When an event happened, by the server's clock: the client's timestamp moved by the
    difference between the server's clock and the client's at sending (Segment's `timestamp =
    receivedAt - (sentAt - originalTimestamp)`, PostHog's `now + (timestamp - sent_at)`)."""
    if sent_at_us is None:
        return client_us
    corrected = received_us - (sent_at_us - client_us)
    try:
        return check_in_range_us(corrected)
    except ValueError:
        return client_us  # a sentAt decades off: keep what the client said rather than refuse


def timestamp_us(value: Any, *, index: int | None, field: str) -> int:
    """A message's RFC 3339 timestamp in µs, or InvalidEvent naming where it is."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{field} must be an RFC 3339 string", index=index, field=field)
    try:
        return _utc_timestamp_us(value)
    except ValueError as exc:
        raise InvalidEvent(f"{field}: {exc}", index=index, field=field) from None


# The µs of each whole second seen lately ("2025-03-01T10:00:00" -> µs): the messages of a
# batch mostly share their second, and the full parse costs ~10x the look-up.
_SECONDS_US: dict[str, int] = {}
_SECONDS_KEPT = 4096
_UTC_SUFFIXES = ("Z", "+00:00")


def _utc_timestamp_us(text: str) -> int:
    """`parse_rfc3339_us`, with a fast path for the forms SDKs send (UTC as `Z` or `+00:00`,
    0 to 9 digits of fraction): the second is parsed once (and checked by the full parser),
    the fraction read here. Any other form goes to the full parser."""
    suffix = "Z" if text[-1:] == "Z" else "+00:00" if text[-6:] == "+00:00" else None
    fraction = text[19 : len(text) - len(suffix)] if suffix else ""
    if suffix is None or not (not fraction or (fraction[0] == "." and 2 <= len(fraction) <= 10)):
        return parse_rfc3339_us(text)
    digits = fraction[1:7]
    if fraction and not (fraction[1:].isascii() and fraction[1:].isdigit()):
        return parse_rfc3339_us(text)
    second = text[:19]
    second_us = _SECONDS_US.get(second)
    if second_us is None:
        second_us = parse_rfc3339_us(second + "Z")  # checks the date and time (and no :60)
        if len(_SECONDS_US) >= _SECONDS_KEPT:
            _SECONDS_US.clear()
        _SECONDS_US[second] = second_us
    return second_us + int(digits.ljust(6, "0")) if digits else second_us


rfc3339 = format_rfc3339_us


def object_field(message: Mapping[str, Any], name: str, index: int | None) -> dict[str, Any]:
    """`message[name]` when it is a JSON object; {} when absent or null; else InvalidEvent."""
    value = message.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent(f"{name} must be a JSON object", index=index, field=name)
    return value


def merged_data(fields: dict[str, Any], properties: dict[str, Any], properties_name: str) -> dict[str, Any]:
    """An event's data: `properties` spread at the top (so `data.plan` reads as for a native
    event) beside the message's own `fields`; when a property has the name of one of those
    fields, the properties stay whole under `properties_name` instead, so nothing is lost."""
    if not properties:
        return fields
    if properties_name in properties or not fields.keys().isdisjoint(properties):
        return {**fields, properties_name: properties}
    return {**properties, **fields}


def parse_json(body: bytes) -> Any:
    """The body's JSON value: orjson when it can, else the reference reader, which says what is
    wrong and where (and takes what orjson cannot, such as integers beyond 64 bits)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = parse_body(body)
    # The reference reader marks what it cannot take (1e400, NaN, a lone surrogate) rather than
    # raising; depth is judged later, per event, by the accept path.
    what = problem(payload, depth_max=1 << 30)
    if what is not None:
        raise InvalidRequest(f"body {what}")
    return payload


def form_data_json(body: bytes, *, base64_encoded: bool) -> bytes:
    """The JSON inside a `data=...` form body (posthog-js without gzip), base64 or not."""
    try:
        values = parse_qs(body.decode("ascii"), strict_parsing=False).get("data")
    except UnicodeDecodeError:
        values = None
    if not values:
        raise InvalidRequest("a form body needs a data field holding the JSON", field="data")
    text = values[0]
    if not base64_encoded:
        return text.encode("utf-8")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        raise InvalidRequest("data is not base64", field="data") from None


def basic_user(request: web.Request) -> bytes | None:
    """The user of an HTTP Basic Authorization header (Segment's SDKs send the write key so,
    with an empty password), or None."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, _ = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return user or None


def admit_header_key(request: web.Request) -> bool:
    """Check a key the headers present (Bearer was checked by `auth.admit`; Basic here, before
    the body is read). True when a header presented one, so the body's key is not asked."""
    if bearer_token(request) is not None:
        return True
    user = basic_user(request)
    if user is None:
        return False
    admit_key(request, "write", user)
    return True


def admit_body_key(request: web.Request, tokens: Iterable[object]) -> None:
    """Check the key a body names (None when it names none): the same key check and rate
    limit as any write route. A body naming two different keys is refused."""
    found = {token for token in tokens if token is not None}
    if len(found) > 1:
        raise InvalidRequest("the messages name different keys: send each key's messages apart", field="writeKey")
    token = found.pop() if found else None
    admit_key(request, "write", token.encode("utf-8", "surrogateescape") if isinstance(token, str) else None)


@dataclass(frozen=True)
class Dialect:
    """How one SDK family reads an error answer: the names its messages give Tlytics' fields,
    and the fields its client looks for in an error's JSON."""

    field_names: Mapping[str, str] = field(default_factory=dict)
    # (status, message) -> more fields of the error's JSON
    error_fields: Callable[[int, str], dict[str, Any]] = lambda status, message: {}


# A word for each refusal, for clients that want a code beside the message.
ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


class _DialectError(ApiError):
    """An error answer with the fields an SDK's client reads beside ours (Segment's `message`
    among them, which json_error's own parameter name cannot take)."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None, details: dict[str, Any]):
        super().__init__(status, message, headers=headers)
        self.details = details

    def response(self) -> web.Response:
        return json_response({"error": self.message, **self.details}, status=self.status, headers=self.headers)


def answering_in(dialect: Dialect) -> Callable[[Handler], Handler]:
    """A handler's errors answered as usual (`error_answers`), with the field names of the
    SDK's messages and the fields its client reads (so it retries or gives up as it should)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def answering(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except Exception as exc:
                answer = error_answer(request, exc)
                if answer is None:
                    raise
                details = dict(answer.details)
                if details.get("field") in dialect.field_names:
                    details["field"] = dialect.field_names[details["field"]]
                details.update(dialect.error_fields(answer.status, answer.message))
                raise _DialectError(answer.status, answer.message, headers=answer.headers, details=details) from exc

        return answering

    return wrap
