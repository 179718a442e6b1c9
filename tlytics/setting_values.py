"""How a setting is written on the command line or in the environment: ports, sizes (`10MiB`),
durations (`5s`), counts, API keys, the store's URL for the server's `Settings`; plain seconds,
whole numbers and JSON objects for the client's `Config`. Each parser turns text into the value
the settings hold and raises ValueError with a message fit to show the operator; a message
never repeats an API key or a store URL, since the text may be a secret.

Imported by the client too: nothing here may load aiohttp or the server."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import orjson

from tlytics.rate import Rate, parse_rate
from tlytics.spool import SpoolSync
from tlytics.timefmt import parse_duration_s

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")
MIN_KEY_LENGTH = 16
# Far below the 8190 bytes the HTTP parser takes for a header line: a longer key could never be
# presented, and the parser's error for it logs the line's first bytes (a part of the secret).
MAX_KEY_LENGTH = 1024


def text(value: str) -> str:
    """Taken as it is written."""
    return value


def path(value: str) -> Path:
    """A file or directory path."""
    return Path(value)


def port(value: str) -> int:
    """A TCP port, 0-65535."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"not a port number: {value!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range 0-65535: {number}")
    return number


def duration_s(value: str) -> float:
    """Seconds, from `500ms`, `5s`, `1m30s`, `90d` or plain seconds."""
    return parse_duration_s(value)


def seconds_number(value: str) -> float:
    """Plain seconds, `2.5` (the client's durations); finite, any sign (Config checks it)."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"not a number of seconds: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number of seconds")
    return number


def whole_number(value: str) -> int:
    """A whole number, any sign (Config says which are allowed, naming the field)."""
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"not a whole number: {value!r}") from None


def json_object(value: str) -> dict[str, Any]:
    """A JSON object, `{"service": "billing"}`."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise ValueError("not a JSON object")
    return decoded


def positive_duration_s(value: str) -> float:
    """A duration longer than 0."""
    seconds = duration_s(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than 0: {value!r}")
    return seconds


def optional_duration_s(value: str) -> float | None:
    """A duration where 0 means none at all (e.g. no retention)."""
    return duration_s(value) or None


def size_bytes(value: str) -> int:
    """Bytes, from 1048576, 10MiB, 1GiB, 500kB; at least 1."""
    match = _SIZE.fullmatch(value)
    if match is None or match[2].lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 1048576, 10MiB, 1GiB)")
    number = int(match[1]) * _SIZE_UNITS[match[2].lower()]
    if number < 1:
        raise ValueError(f"size must be positive: {value!r}")
    return number


def count(value: str) -> int:
    """A whole number, at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise ValueError(f"must be at least 1: {value!r}")
    return number


def spool_sync(value: str) -> SpoolSync:
    """`normal` (survives a process crash) or `full` (also a power loss)."""
    if value not in ("normal", "full"):
        raise ValueError(f"must be normal or full, not {value!r}")
    return cast(SpoolSync, value)


def writer_in_process(value: str) -> bool:
    """`process` (True: the writer's SQLite work in a process of its own) or `thread` (False)."""
    if value not in ("process", "thread"):
        raise ValueError(f"must be process or thread, not {value!r}")
    return value == "process"


def switch(value: str) -> bool:
    """yes or no (also true/false, on/off, 1/0); the flag alone means yes."""
    answer = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}
    if value.lower() not in answer:
        raise ValueError(f"must be yes or no, not {value!r}")
    return answer[value.lower()]


def log_level(value: str) -> str:
    """A level name the logging module knows, in any case: debug, info, warning, error."""
    if value.upper() not in logging.getLevelNamesMapping():
        raise ValueError(f"must be debug, info, warning or error, not {value!r}")
    return value


def api_key(value: str) -> str:
    """An API key: 16+ printable ASCII characters without spaces or commas (a comma separates
    keys in a variable). ASCII because an HTTP header carries it: Python's http.client sends a
    header as latin-1 (an é arrives as another byte than the server's UTF-8 key; a € cannot be
    sent at all) and browsers refuse anything beyond latin-1 in fetch(), so a non-ASCII key
    would be refused to some clients only."""
    if not MIN_KEY_LENGTH <= len(value) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" and c != "," for c in value):
        # The value is not shown: a key that is almost right is still almost a secret.
        raise ValueError(
            f"an API key needs {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters of printable ASCII,"
            " without spaces or commas"
        )
    return value


# A property as /stats's unique= names it (tlytics.ingest.query.DATA_PROPERTY).
_DATA_PROPERTY = re.compile(r"data\.([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)\Z")


def _data_property(value: str, kind: str, example: str) -> str:
    match = _DATA_PROPERTY.match(value.strip())
    if match is None:
        raise ValueError(f"a {kind} property looks like data.<property>, e.g. {example}")
    return match[1]


def unique_property(value: str) -> str:
    """A property whose distinct values the store sketches: `data.user_id` gives `user_id`."""
    return _data_property(value, "unique", "data.user_id")


def public_property(value: str) -> str:
    """A property a stats key may break down and filter by: `data.country` gives `country`."""
    return _data_property(value, "public", "data.country")


def declared_property(value: str) -> str:
    """A property the store keeps typed and indexed beside the events, so filters on it read an
    index instead of parsing every event's JSON: `data.amount` gives `amount`."""
    return _data_property(value, "declared", "data.amount")


def rate(value: str) -> Rate | None:
    """A request rate with a burst: `2000/s`, `100/m`, `2000/s,burst=5000`; `off` for none."""
    return parse_rate(value)


_STORE_SCHEMES = ("postgresql://", "postgres://")
_STORE_URL_SHAPE = "a postgresql://user:password@host:port/dbname URL"


def store_url(value: str) -> str:
    """A PostgreSQL connection URL, `postgresql://user:password@host:port/dbname`."""
    # The value is not shown: it may hold the database password.
    if not value.startswith(_STORE_SCHEMES):
        raise ValueError(f"must be {_STORE_URL_SHAPE} (the scheme must be postgresql://)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError(f"must be {_STORE_URL_SHAPE}; this one does not parse") from None
    if not parts.path.strip("/"):
        raise ValueError(f"must be {_STORE_URL_SHAPE}: the database name is missing")
    return value


def masked_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`: what logs and messages show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
