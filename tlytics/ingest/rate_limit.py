"""Rate limits: a token bucket per caller (per key, or per client address for a request
without a valid key), one table for ingest (`--rate-limit`) and one for reads
(`--read-rate-limit`), so a dashboard's polling never eats a sender's budget.

A bucket holds up to `burst` tokens and refills at `per_second`; a request takes one token,
and without one it is answered 429 with the `Retry-After` the bucket needs to hold a token
again. Checking costs a clock read, a dict lookup and some arithmetic on the event loop (no
lock: one loop owns the tables). A bucket idle long enough to have refilled is the same as
no bucket, so such buckets are swept out every `SWEEP_PERIOD_S`, and a table never holds
more than `max_buckets`: when it is full of buckets still refilling, new callers share one
overflow bucket (a flood of fresh addresses gets one budget between them, never one each).
Failed authentications are limited per client address too (`--auth-failure-limit`), so keys
cannot be guessed at thousands per second. Limits are per server process.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Hashable

from prometheus_client import CollectorRegistry, Counter

from tlytics.rate import Rate

SWEEP_PERIOD_S = 30.0
MAX_BUCKETS = 50_000


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """Token buckets for one rate, by caller."""

    def __init__(
        self, rate: Rate, *, max_buckets: int = MAX_BUCKETS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self._per_second = rate.per_second
        self._burst = float(rate.burst)
        self._max_buckets = max_buckets
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}
        self._overflow = _Bucket(self._burst, clock())
        self._next_sweep = clock() + SWEEP_PERIOD_S

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: Hashable) -> float | None:
        """Take a token for `caller`: None when there was one, else the seconds until there is."""
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if now >= self._next_sweep:
                self._sweep(now)
            if len(self._buckets) >= self._max_buckets:
                # Full even of buckets still refilling: a new caller shares the overflow
                # bucket with every other newcomer. Dropping buckets to make room would give
                # a flood of fresh addresses a fresh budget each.
                bucket = self._overflow
            else:
                self._buckets[caller] = _Bucket(self._burst - 1.0, now)
                return None
        return self._take_from(bucket, now)

    def wait_s(self, caller: Hashable) -> float | None:
        """Like `take`, without taking: None when `caller` has a token, else the seconds until
        it has one (a caller without a bucket has its whole burst)."""
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) < self._max_buckets:
                return None
            bucket = self._overflow
        tokens = min(self._burst, bucket.tokens + (self._clock() - bucket.updated) * self._per_second)
        return None if tokens >= 1.0 else (1.0 - tokens) / self._per_second

    def _take_from(self, bucket: _Bucket, now: float) -> float | None:
        tokens = bucket.tokens + (now - bucket.updated) * self._per_second
        if tokens > self._burst:
            tokens = self._burst
        bucket.updated = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return None
        bucket.tokens = tokens
        return (1.0 - tokens) / self._per_second

    def _sweep(self, now: float) -> None:
        """Forget the buckets that have refilled (as good as none): at most once a sweep
        period, so a full table does not cost a pass over it per request."""
        self._next_sweep = now + SWEEP_PERIOD_S
        burst, per_second = self._burst, self._per_second
        self._buckets = {
            caller: bucket
            for caller, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * per_second < burst
        }


def address_caller(remote: str | None) -> Hashable:
    """The bucket of a request without a valid key: its IPv4 address, or its IPv6 /64 (one
    host usually holds a whole /64, so per-address buckets would give it 2^64 budgets and let
    it flush everyone else's buckets out of the table)."""
    if not remote or ":" not in remote:
        return remote or ""
    try:
        address = ipaddress.IPv6Address(remote.partition("%")[0])
    except ValueError:
        return remote
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return int(address) >> 64


def retry_after_header(wait_s: float) -> str:
    """Whole seconds, rounded up and at least 1 (what clients parse best)."""
    return str(max(1, math.ceil(wait_s)))


class RateLimits:
    """The server's limiters (None where off): ingest, reads, and failed authentications per
    address; and the count of requests they refused, by the limit (`write`, `read` or
    `auth_failures`) and the scope of the caller's key (`none` without one)."""

    def __init__(
        self, write: Rate | None, read: Rate | None, registry: CollectorRegistry, *, auth_failures: Rate | None = None
    ) -> None:
        self.write = RateLimiter(write) if write is not None else None
        self.read = RateLimiter(read) if read is not None else None
        self.auth_failures = RateLimiter(auth_failures) if auth_failures is not None else None
        self.limited = Counter(
            "tlytics_requests_rate_limited",
            "Requests answered 429 by a rate limit, by limit and by the scope of the caller's key",
            ["limit", "scope"],
            registry=registry,
        )
