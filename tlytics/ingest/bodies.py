"""Request bodies: the checks every JSON body passes before it is parsed (content type, content
coding, size, time to arrive) and its decoding (gzip, deflate), with a bounded output so a
compression bomb costs `max_body_bytes` of work, never the server's memory, linear in the body
and bounded in gzip members; a body that inflates to more than a little is decoded off the
event loop (`body_work`)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Collection
from typing import Any

import structlog
from aiohttp import web

from tlytics.errors import InvalidRequest, RequestTooLarge
from tlytics.ingest.body_work import BODY_WORKERS, INLINE_BODY_BYTES, INLINE_REFERENCE_BYTES
from tlytics.ingest.cors import beacon_body_allowed
from tlytics.ingest.responses import ApiError
from tlytics.ingest.settings import Settings
from tlytics.ingest.state import SETTINGS
from tlytics.ingest.validation import parse_body

log = structlog.get_logger("tlytics.ingest")

# Content codings of request bodies, decoded here rather than by aiohttp (create_app turns its
# decoding off) so that a corrupt or unsupported body gets a JSON error like any other: zlib's
# wbits for each (deflate is chosen per body: zlib-wrapped or raw, as clients send both).
_BODY_DECODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(
    request: web.Request,
    *,
    also_accept: Collection[str] = (),
    content_coding: str | None = None,
    settings: Settings | None = None,
) -> bytes:
    """The request's JSON body, decoded; refuses a wrong type or coding (415), a body too large
    (413) or too slow to arrive (408), and a corrupt coding (400). `also_accept`: more content
    types (PostHog's form body); `content_coding`: the coding when the client says it elsewhere
    than in Content-Encoding (PostHog's `?compression=gzip-js`); `settings`: the app's, when
    the caller has them already."""
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
    if settings is None:
        settings = request.app[SETTINGS]
    max_bytes = settings.max_body_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestTooLarge(
            f"request body is larger than {max_bytes} bytes", limit=max_bytes, limit_of="bytes_per_body"
        )
    try:
        if request.content.is_eof():  # all there already (most bodies): no timer to arm, ~9 µs saved
            body = await request.read()
        else:
            async with asyncio.timeout(settings.body_timeout_s):
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLarge(
            f"request body is larger than {max_bytes} bytes", limit=max_bytes, limit_of="bytes_per_body"
        ) from None
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
        return await _decoded(request, body, encoding, max_bytes)
    return body


async def _decoded(request: web.Request, body: bytes, encoding: str, max_bytes: int) -> bytes:
    """The body inflated: on the loop while it inflates to little (most bodies, where a thread
    hop would cost more than the work), else on a body thread, from the start."""
    inline_max = min(max_bytes, INLINE_BODY_BYTES)
    if len(body) <= inline_max:
        try:
            return decode_body(body, encoding, inline_max)
        except RequestTooLarge:
            if inline_max >= max_bytes:
                raise
    return await request.app[BODY_WORKERS].run(decode_body, body, encoding, max_bytes)


# Several gzip members in one body are legal (RFC 1952), and concatenated files make them; more
# than this many is no client's doing, only a way to make decoding cost per member.
GZIP_MEMBERS_MAX = 64
# Compressed input is fed to zlib this much at a time, so what is left over after a member's
# end (zlib copies it into `unused_data`) is at most this long: decoding is linear in the body
# whatever its members, not quadratic as when the whole rest was copied after each member.
_FEED_BYTES = 64 * 1024


def decode_body(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Inflate a gzip or deflate body, refusing past `max_bytes` of output (a gzip bomb is a
    413 after max_bytes of work, not an out-of-memory) and past GZIP_MEMBERS_MAX members.
    The work is linear in `len(body) + max_bytes`."""
    wbits = _BODY_DECODINGS[encoding]
    if encoding == "deflate" and body[:1] and body[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, without the zlib header
    view = memoryview(body)
    decompressor = zlib.decompressobj(wbits)
    members = 1
    offset = 0  # how much of the body was fed to zlib
    out = bytearray()
    try:
        while True:
            chunk = view[offset : offset + _FEED_BYTES]
            offset += len(chunk)
            out += decompressor.decompress(chunk, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise RequestTooLarge(
                    f"request body is larger than {max_bytes} bytes once decompressed",
                    limit=max_bytes,
                    limit_of="bytes_per_body",
                )
            # Below the limit, decompress() consumed its whole chunk; at a stream's end, what
            # follows it (the next gzip member) is in unused_data, at most a chunk long.
            if decompressor.eof:
                leftover = len(decompressor.unused_data)
                if not leftover and offset >= len(view):
                    break
                if wbits != _BODY_DECODINGS["gzip"]:
                    raise zlib.error("data after the end of the stream")
                members += 1
                if members > GZIP_MEMBERS_MAX:
                    raise InvalidRequest(
                        f"request body has more than {GZIP_MEMBERS_MAX} gzip members", field="Content-Encoding"
                    )
                offset -= leftover
                decompressor = zlib.decompressobj(wbits)
            elif offset >= len(view):
                break
    except zlib.error as exc:
        raise InvalidRequest(f"request body is not valid {encoding}: {exc}", field="Content-Encoding") from None
    if not decompressor.eof:
        raise InvalidRequest(f"request body is not valid {encoding}: it ends early", field="Content-Encoding")
    return bytes(out)


async def read_json(request: web.Request) -> Any:
    """The request's body parsed as JSON (InvalidRequest, with `position`, when it is not);
    parsed on a body thread unless it is small."""
    body = await read_body(request)
    if len(body) <= INLINE_REFERENCE_BYTES:
        return parse_body(body)
    return await request.app[BODY_WORKERS].run(parse_body, body)
