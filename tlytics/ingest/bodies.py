"""Request bodies: the checks every JSON body passes before it is parsed (content type, content
coding, size, time to arrive) and its decoding (gzip, deflate), with a bounded output so a
compression bomb costs `max_body_bytes` of work, never the server's memory."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Collection
from typing import Any

import structlog
from aiohttp import web

from tlytics.errors import InvalidRequest, RequestTooLarge
from tlytics.ingest.cors import beacon_body_allowed
from tlytics.ingest.responses import ApiError
from tlytics.ingest.state import SETTINGS
from tlytics.ingest.validation import parse_body

log = structlog.get_logger("tlytics.ingest")

# Content codings of request bodies, decoded here rather than by aiohttp (create_app turns its
# decoding off) so that a corrupt or unsupported body gets a JSON error like any other: zlib's
# wbits for each (deflate is chosen per body: zlib-wrapped or raw, as clients send both).
_BODY_DECODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(
    request: web.Request, *, also_accept: Collection[str] = (), content_coding: str | None = None
) -> bytes:
    """The request's JSON body, decoded; refuses a wrong type or coding (415), a body too large
    (413) or too slow to arrive (408), and a corrupt coding (400). `also_accept`: more content
    types (PostHog's form body); `content_coding`: the coding when the client says it elsewhere
    than in Content-Encoding (PostHog's `?compression=gzip-js`)."""
    if (
        request.content_type != "application/json"
        and not request.content_type.endswith("+json")
        and request.content_type not in also_accept
        and not beacon_body_allowed(request)
    ):
        raise ApiError(
            415,
            f"content type must be application/json, not {request.content_type}",
            field="Content-Type",
        )
    encoding = content_coding or request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity") and encoding not in _BODY_DECODINGS:
        raise ApiError(
            415,
            f"content encoding {encoding[:100]!r} is not supported: send gzip, deflate or none",
            field="Content-Encoding",
        )
    settings = request.app[SETTINGS]
    max_bytes = settings.max_body_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestTooLarge(f"request body is larger than {max_bytes} bytes", limit=max_bytes)
    try:
        if request.content.is_eof():  # all there already (most bodies): no timer to arm, ~9 µs saved
            body = await request.read()
        else:
            async with asyncio.timeout(settings.body_timeout_s):
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLarge(f"request body is larger than {max_bytes} bytes", limit=max_bytes) from None
    except TimeoutError:
        # A client that stalls mid-body would hold a connection and a task for ever: drop it.
        # Its fault, not ours: a warning without a traceback, and a 4xx in the metrics.
        log.warning("client_body_timeout", remote=request.remote, timeout_s=settings.body_timeout_s)
        raise ApiError(
            408,
            f"the request body did not arrive within {settings.body_timeout_s:g} s",
            headers={"Connection": "close"},
        ) from None
    if encoding in _BODY_DECODINGS:
        return _decode_body(body, encoding, max_bytes)
    return body


def _decode_body(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Inflate a gzip or deflate body, refusing past `max_bytes` of output (a gzip bomb is a
    413 after max_bytes of work, not an out-of-memory)."""
    wbits = _BODY_DECODINGS[encoding]
    if encoding == "deflate" and body[:1] and body[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, without the zlib header
    decompressor = zlib.decompressobj(wbits)
    pending = body
    out = bytearray()
    try:
        while True:
            out += decompressor.decompress(pending, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise RequestTooLarge(
                    f"request body is larger than {max_bytes} bytes once decompressed", limit=max_bytes
                )
            # Below the limit, decompress() consumed all its input: what is left follows the
            # end of the stream, which for gzip is the next member (RFC 1952 allows several).
            pending = decompressor.unused_data
            if not decompressor.eof or not pending:
                break
            if wbits != _BODY_DECODINGS["gzip"]:
                raise zlib.error("data after the end of the stream")
            decompressor = zlib.decompressobj(wbits)
    except zlib.error as exc:
        raise InvalidRequest(f"request body is not valid {encoding}: {exc}", field="Content-Encoding") from None
    if not decompressor.eof:
        raise InvalidRequest(f"request body is not valid {encoding}: it ends early", field="Content-Encoding")
    return bytes(out)


async def read_json(request: web.Request) -> Any:
    """The request's body parsed as JSON (InvalidRequest, with `position`, when it is not)."""
    return parse_body(await read_body(request))
