"""Capture bodies (`segment`, `posthog`) handled by the rule of `/events` and `/batch`: cheap
checks first, and the costly work off the event loop for anything but a small body.

A capture body costs Python work per message (parsing it, translating it into a Tlytics event,
writing the translation back as JSON), so a 10 MiB batch of tiny messages, or 10 KB of gzip
inflating to one, would hold the loop for seconds. Here:
- the cheap checks come first, in C (msgspec splits the body into its messages' JSON texts
  without building them): too many messages, or a message or batch-level field longer than an
  event may be, is refused at once (413), before anything is built;
- the messages are parsed one by one, so no single C call (which holds the GIL, and so the
  loop) spans more than one message, itself at most `max_event_bytes`;
- bodies over `INLINE_REFERENCE_BYTES` are parsed, translated and written on a body thread
  (`body_work`), with its 503 + Retry-After when its queue is full; the translated `/batch`
  body then passes `accept.spool_body`, which validates it off the loop as well when large.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec

import msgspec
import orjson
from aiohttp import web
from msgspec import Raw

from tlytics.errors import InvalidEvent, InvalidRequest, RequestTooLarge
from tlytics.ingest.accept import spool_body
from tlytics.ingest.body_work import BODY_WORKERS, INLINE_REFERENCE_BYTES
from tlytics.ingest.capture_common import admit_body_key, parse_json
from tlytics.ingest.state import SETTINGS

P = ParamSpec("P")

_split_top = msgspec.json.Decoder(dict[str, Raw] | list[Raw])
_split_items = msgspec.json.Decoder(list[Raw])
_JSON_SPACES = (b" ", b"\t", b"\n", b"\r")


@dataclass(frozen=True)
class Limits:
    """The server's limits, read on the loop and handed to the body thread."""

    max_events: int
    max_event_bytes: int
    max_body_bytes: int

    @classmethod
    def of(cls, request: web.Request) -> Limits:
        settings = request.app[SETTINGS]
        return cls(settings.max_events_per_request, settings.max_event_bytes, settings.max_body_bytes)


@dataclass
class Translated:
    """A capture body's translation: the keys it names (checked on the loop, before any word
    about its shape goes out) and its `/batch` body, or why it is refused."""

    tokens: list[str] = field(default_factory=list)
    batch_body: bytes = b""
    refusal: InvalidRequest | None = None


async def translate(
    request: web.Request,
    work: Callable[Concatenate[bytes, P], Translated],
    body: bytes,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Translated:
    """`work(body, ...)` on the loop for a small body (a thread hop would cost more), else on a
    body thread."""
    if len(body) <= INLINE_REFERENCE_BYTES:
        return work(body, *args, **kwargs)
    return await request.app[BODY_WORKERS].run(work, body, *args, **kwargs)


async def spool_translated(request: web.Request, translated: Translated, *, header_key: bool) -> int:
    """Check the body's key (unless a header presented one), answer its refusal if any, else
    spool its events through the accept path of `/batch`; their count once committed."""
    if not header_key:
        admit_body_key(request, translated.tokens)
    if translated.refusal is not None:
        raise translated.refusal
    return await spool_body(request, translated.batch_body, batch=True)


def batch_body(events: list[dict[str, Any]]) -> bytes:
    """The `/batch` body of translated events."""
    try:
        return orjson.dumps({"events": events})
    except orjson.JSONEncodeError:
        raise InvalidEvent(_NOT_UNICODE, index=_first_not_encodable(events)) from None


# orjson reads an escaped lone surrogate ("\ud800") but cannot write it back, nor can the store.
_NOT_UNICODE = "a string is not Unicode (a lone surrogate such as \\ud800)"


def _first_not_encodable(events: list[dict[str, Any]]) -> int | None:
    for index, event in enumerate(events):
        try:
            orjson.dumps(event)
        except orjson.JSONEncodeError:
            return index
    return None


def parse_messages(
    body: bytes, *, list_field: str | None, top_fields: Collection[str], list_at_top: bool, limits: Limits
) -> Any:
    """The body's JSON value, as `parse_json` gives it, but reached by the cheap checks first:
    a body that is an object holding a list of messages under `list_field` (or, with
    `list_at_top`, a list of messages) has its messages counted and measured before any is
    built, then parsed one by one; of its other fields only `top_fields` are read (each measured
    first too); any other body is one message, measured whole. Raises RequestTooLarge when a
    limit is passed, InvalidRequest when the body is not JSON."""
    try:
        top = _split_top.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return parse_json(body)  # not JSON msgspec can split: the readers say what is wrong where
    if isinstance(top, list):
        if not list_at_top:
            return []  # never a valid body here: no need to build it to say so
        return _parsed_items(body, top, limits, name=None) or parse_json(body)
    if list_field is None or list_field not in top:
        _refuse_longer(body, limits.max_event_bytes, index=0, name=None)
        return parse_json(body)
    try:
        raw_items = _split_items.decode(top[list_field])
    except (msgspec.DecodeError, RecursionError):
        raw_items = None  # not a list: refused as such, by the caller
    value: dict[str, Any] = {}
    for name in top_fields:
        if name in top:
            _refuse_longer(top[name], limits.max_event_bytes, index=None, name=name)
            value[name] = _parsed(top[name])
            if value[name] is _UNREADABLE:
                return parse_json(body)
    if raw_items is None:
        value[list_field] = None  # refused by the caller as not a list, without building it
        return value
    items = _parsed_items(body, raw_items, limits, name=list_field)
    if items is None:
        return parse_json(body)
    value[list_field] = items
    return value


_UNREADABLE = object()


def _parsed(raw: Raw) -> Any:
    """One JSON text msgspec split off, parsed by orjson; _UNREADABLE when orjson cannot read
    it (an integer beyond 64 bits, 1e400): then the whole body goes to the reference reader."""
    try:
        return orjson.loads(memoryview(raw))  # orjson takes no Raw, but reads its buffer
    except orjson.JSONDecodeError:
        return _UNREADABLE


def _parsed_items(body: bytes, raw_items: list[Raw], limits: Limits, *, name: str | None) -> list[Any] | None:
    """The messages parsed one by one after the count and size checks; None when one is
    unreadable for orjson."""
    if len(raw_items) > limits.max_events:
        raise RequestTooLarge(
            f"too many messages in one request: {len(raw_items)} (at most {limits.max_events})",
            limit=limits.max_events,
            limit_of="events_per_request",
            **({"field": name} if name else {}),
        )
    items = []
    for index, raw in enumerate(raw_items):
        _refuse_longer(raw, limits.max_event_bytes, index=index, name=None)
        item = _parsed(raw)
        if item is _UNREADABLE:
            return None
        items.append(item)
    return items


def _refuse_longer(text: Raw | bytes, max_bytes: int, *, index: int | None, name: str | None) -> None:
    """RequestTooLarge when a message (or batch-level field) is longer than an event may be,
    whitespace aside: its event would be refused for its size anyway, after all the work."""
    if len(text) <= max_bytes:
        return
    data = bytes(text)
    size = len(data) - sum(data.count(space) for space in _JSON_SPACES)
    if size > max_bytes:
        what = f"{name} is" if name else "message is"
        where: dict[str, Any] = {"field": name} if name else {}
        if index is not None:
            where["index"] = index
        raise RequestTooLarge(
            f"{what} {size} bytes, more than an event may be ({max_bytes})",
            limit=max_bytes,
            limit_of="bytes_per_event",
            **where,
        )
