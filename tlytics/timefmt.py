"""Time formats of the API: RFC 3339 timestamps (stored as UTC microseconds) and Go-style
durations (`500ms`, `5s`, `1m30s`) for the command line."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<fraction>\d{1,9}))?(?P<offset>[Zz]|[+-]\d{2}:\d{2})\Z"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The instants every reader can hold and print (a 4-digit year in UTC): an accepted timestamp
# lies between these, inclusive, so it can always be read, formatted and posted back.
MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


def parse_rfc3339_us(text: str) -> int:
    """Parse an RFC 3339 timestamp into UTC microseconds since the epoch.

    An offset (`Z` or `±hh:mm`) is required: a timestamp without one is ambiguous, and guessing
    the zone would silently shift events by hours. Raises ValueError.
    """
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError("not an RFC 3339 timestamp (e.g. 2025-08-25T10:00:00Z)")
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    offset = match["offset"]
    offset = "+00:00" if offset in ("Z", "z") else offset
    if match["time"].endswith(":60"):
        raise ValueError(
            "a leap second (:60): RFC 3339 allows it but it cannot be stored; send :59.999999 or the next second"
        )
    if int(offset[1:3]) > 23 or int(offset[4:6]) > 59:
        raise ValueError(f"not a valid RFC 3339 timestamp: the offset {offset} is beyond ±23:59")
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}{offset}")
    except ValueError as exc:  # "month must be in 1..12", "day is out of range for month", ...
        raise ValueError(f"not a valid RFC 3339 timestamp: {exc}") from None
    micros = datetime_to_us(moment)
    check_in_range_us(micros)
    return micros


def check_in_range_us(micros: int) -> int:
    """Return `micros` if its UTC instant lies in years 0001-9999, else raise ValueError."""
    if not MIN_US <= micros <= MAX_US:
        raise ValueError("outside the years 0001-9999 in UTC (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z)")
    return micros


def datetime_to_us(moment: datetime) -> int:
    """A timezone-aware datetime as microseconds since the epoch (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_datetime(micros: int) -> datetime:
    """Microseconds since the epoch as a UTC datetime."""
    return _EPOCH + timedelta(microseconds=micros)


_last_second: list[tuple[int, str]] = [(-1, "")]


def format_rfc3339_us(micros: int) -> str:
    """Format UTC microseconds as RFC 3339 with `Z`, fractions only when there are any."""
    second, fraction = divmod(micros, 1_000_000)
    # Consecutive events mostly share their second: format the date and time once per second.
    cached_second, prefix = _last_second[0]
    if cached_second != second:
        moment = _EPOCH + timedelta(seconds=second)
        # Not strftime: glibc's %Y does not pad years below 1000 to four digits.
        prefix = (
            f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
            f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
        )
        _last_second[0] = (second, prefix)
    if fraction:
        return f"{prefix}.{fraction:06d}".rstrip("0") + "Z"
    return prefix + "Z"


# Go's units, plus d and w for retention periods such as 90d.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}


def parse_duration_s(text: str) -> float:
    """Parse `500ms`, `5s`, `1m30s` (Go's syntax), `90d`, or plain seconds (`2.5`) into seconds."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        position = 0
        seconds = 0.0
        for part in _DURATION_PART.finditer(text):
            if part.start() != position:
                break
            seconds += float(part[1]) * _UNIT_SECONDS[part[2]]
            position = part.end()
        if position != len(text) or not text:
            raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 5s, 1m30s)") from None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"not a duration: {text!r} (must be a finite, non-negative time)")
    return seconds
