"""Validation and normalization of incoming events, in one pass per event: the reference rules.

An accepted event becomes a compact list `[id_hex, key, timestamp_us, data]`: the server
assigns a UUIDv7 when `id` is absent and "now" when `timestamp` is absent, so what is spooled
is final and a replay of the spool inserts exactly the same rows (the unique id dedupes it).
What JSON inside `data` may hold is `tlytics.jsontext`'s to say.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from tlytics.errors import InvalidEvent
from tlytics.ids import BLOCK_MAX, uuid7_block, uuid7_int
from tlytics.jsontext import DEPTH_MAX, JsonProblem, problem
from tlytics.timefmt import parse_rfc3339_us

KEY_MAX_CHARS = 200
KNOWN_FIELDS = frozenset({"id", "key", "timestamp", "data"})
# Refused in keys: control characters (Cc), invisible format characters (Cf: U+200B, U+202E
# right-to-left override, U+FEFF…), line and paragraph separators (Zl, Zp) and lone
# surrogates (Cs): each makes two different keys look alike, or a key look like another.
# Written out (Unicode 14, Python 3.11's) rather than scanned from unicodedata at import,
# which costs 80 ms in every process that imports the client; a test checks it is complete.
REFUSED_KEY_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_REFUSED_IN_KEY = (
    r"\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e"
    r"\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb"
    r"\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    r"\U000e0001\U000e0020-\U000e007f"
)
_REFUSED_KEY_CHARS = re.compile(f"[{_REFUSED_IN_KEY}]")
# The space separators (Zs) but U+0020: a no-break space looks like a space in a key.
_ODD_SPACE = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
# \Z, not $: $ also matches before a trailing newline.
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
_UUID = re.compile(UUID_PATTERN)

NormalizedEvent = list[Any]  # [id_hex: str, key: str, timestamp_us: int, data: dict]


def check_key(key: object, index: int | None = None) -> str:
    """Return `key` if it is a valid event key, else raise InvalidEvent saying why."""
    if not isinstance(key, str):
        if key is None:
            raise InvalidEvent("key is required", index=index, field="key")
        raise InvalidEvent("key must be a string", index=index, field="key")
    if not key:
        raise InvalidEvent("key must not be empty", index=index, field="key")
    if len(key) > KEY_MAX_CHARS:
        raise InvalidEvent(f"key is longer than {KEY_MAX_CHARS} characters", index=index, field="key")
    refused = refused_character(key)
    if refused is not None:
        raise InvalidEvent(
            f"key must not contain control characters, invisible formatting characters or"
            f" line separators (found U+{ord(refused):04X})",
            index=index,
            field="key",
        )
    if key.isspace():
        raise InvalidEvent("key must not be only whitespace", index=index, field="key")
    if not key.isascii():
        _check_key_look(key, index)
    return key


def refused_character(text: str) -> str | None:
    """The first character of `text` that makes one name look like another (a control or
    invisible format character, a line separator, a lone surrogate), or None."""
    refused = _REFUSED_KEY_CHARS.search(text)
    return refused[0] if refused else None


def _check_key_look(key: str, index: int | None) -> None:
    """Refuse the keys that look like another one but are spelt differently: a space other
    than U+0020 (a no-break space), or a spelling that is not Unicode's composed form (NFC:
    `e` + U+0301 where `é` is meant), since both spellings would count as two keys."""
    odd_space = _ODD_SPACE.search(key)
    if odd_space:
        raise InvalidEvent(
            f"key must not contain spaces other than U+0020 (found U+{ord(odd_space[0]):04X})",
            index=index,
            field="key",
        )
    if not unicodedata.is_normalized("NFC", key):
        raise InvalidEvent(
            "key must be in Unicode's composed form NFC (e.g. 'é' as one character, not 'e' + U+0301)",
            index=index,
            field="key",
        )


def normalize_event(raw: object, index: int, now_us: int, new_id_hex: str | None = None) -> NormalizedEvent:
    """Validate one decoded JSON event and return its normalized form.

    `raw` comes from `tlytics.jsontext.parse_checked` (or any JSON reader); `new_id_hex` is
    the id to give the event when it has none (default: a fresh UUIDv7).
    """
    if isinstance(raw, JsonProblem):  # the event has a field twice: that field is named
        raise InvalidEvent(f"event {raw.message}", index=index, field=raw.repeated_key)
    if not isinstance(raw, dict):
        raise InvalidEvent("event must be a JSON object", index=index)
    unknown = raw.keys() - KNOWN_FIELDS
    if unknown:
        # A misspelt field (say "timestmap") silently ignored would store wrong data.
        name = sorted(unknown)[0]
        raise InvalidEvent(f"unknown field {name!r}", index=index, field=name)

    key = check_key(raw.get("key"), index)

    event_id = raw.get("id")
    if event_id is None:
        id_hex = new_id_hex if new_id_hex is not None else f"{uuid7_int():032x}"
    elif isinstance(event_id, str) and _UUID.match(event_id):
        id_hex = event_id.replace("-", "").lower()
    else:
        raise InvalidEvent("id must be a UUID string", index=index, field="id")

    timestamp = raw.get("timestamp")
    if timestamp is None:
        timestamp_us = now_us
    elif isinstance(timestamp, str):
        try:
            timestamp_us = parse_rfc3339_us(timestamp)
        except ValueError as exc:
            raise InvalidEvent(f"timestamp is {exc}", index=index, field="timestamp") from None
    else:
        raise InvalidEvent("timestamp must be an RFC 3339 string", index=index, field="timestamp")

    data = raw.get("data")
    if isinstance(data, JsonProblem):
        raise InvalidEvent(f"data {data.message}", index=index, field="data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise InvalidEvent("data must be a JSON object", index=index, field="data")
    else:
        data_problem = problem(data, DEPTH_MAX)
        if data_problem is not None:
            raise InvalidEvent(f"data {data_problem}", index=index, field="data")

    return [id_hex, key, timestamp_us, data]


def normalize_events(raws: list[Any], now_us: int) -> list[NormalizedEvent]:
    """Validate a whole request's events; the first invalid one rejects them all."""
    if not raws or len(raws) > BLOCK_MAX:
        return [normalize_event(raw, index, now_us) for index, raw in enumerate(raws)]
    first_id = uuid7_block(len(raws))
    return [normalize_event(raw, index, now_us, f"{first_id + index:032x}") for index, raw in enumerate(raws)]
