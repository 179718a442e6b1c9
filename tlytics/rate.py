"""A request rate as an operator writes it (`--rate-limit 2000/s,burst=5000`): the `Rate`
value the server's settings hold, and its parser. The token buckets that enforce it are the
HTTP server's (tlytics.ingest.rate_limit); this module stays a leaf, so `Settings` can hold a
rate without importing the server."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*(?:,\s*burst\s*=\s*(\d+)\s*)?")
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_EXAMPLES = "(use e.g. 2000/s, 100/m, or 2000/s,burst=5000; off for none)"
MIN_PER_SECOND = 1 / 86_400  # one request a day: the longest Retry-After is a day
MAX_PER_SECOND = 1e9  # far beyond what one process serves; `off` says "no limit"
MAX_BURST = 1_000_000_000


@dataclass(frozen=True)
class Rate:
    """How many requests a caller may make: `per_second` on average, `burst` at once."""

    per_second: float
    burst: int
    text: str  # as the operator wrote it, for messages

    def __str__(self) -> str:
        return self.text


def parse_rate(value: str) -> Rate | None:
    """`2000/s`, `100/m`, `5000/h`, optionally `,burst=N` (default: one second's worth, at
    least 1); `0` or `off` means no limit."""
    if value.strip().lower() in ("0", "off", "none"):
        return None
    match = _RATE.fullmatch(value)
    if match is None:
        raise ValueError(f"not a rate: {value!r} {_EXAMPLES}")
    per_second = float(match[1]) / _UNIT_S[match[2]]
    if per_second <= 0:
        raise ValueError(f"a rate must be above 0: {value!r} {_EXAMPLES}")
    # Bounded both ways: a rate of hundreds of digits is infinite as a float (the default
    # burst cannot be computed), and one too slow makes a Retry-After no client could use (or
    # an infinite one, a 500 on the first refused request).
    if not MIN_PER_SECOND <= per_second <= MAX_PER_SECOND:
        raise ValueError(f"a rate must be from 1 a day to {MAX_PER_SECOND:.0e}/s: {value!r} {_EXAMPLES}")
    if match[3] is not None and len(match[3].lstrip("0")) > len(str(MAX_BURST)):
        raise ValueError(f"a burst must be from 1 to {MAX_BURST}: {value!r} {_EXAMPLES}")
    burst = int(match[3]) if match[3] is not None else max(1, math.ceil(per_second))
    if not 1 <= burst <= MAX_BURST:
        raise ValueError(f"a burst must be from 1 to {MAX_BURST}: {value!r} {_EXAMPLES}")
    return Rate(per_second=per_second, burst=burst, text=value.strip())
