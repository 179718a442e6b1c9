"""Rate limits (`--rate-limit`, `--read-rate-limit`): how a rate is written, the token bucket
on a clock of the test's own (burst, refill, Retry-After, bounded memory), and a real server:
429 with Retry-After per key, reads and writes apart, open routes never limited, /metrics
counting by scope, and the client library delivering everything through a limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from tests.helpers import app_flush, spool_count, store_count
from tlytics import Client, Config, Event
from tlytics.ingest.rate_limit import SWEEP_PERIOD_S, RateLimiter, address_caller
from tlytics.ingest.state import METRICS
from tlytics.rate import Rate, parse_rate

WRITE_A = "write-key-a-0123456789"
WRITE_B = "write-key-b-0123456789"
READ_KEY = "read-key-0123456789abc"
# Slow enough that no token comes back while a test runs, however busy the machine.
NO_REFILL = "1/h"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("text", "per_second", "burst"),
    [
        ("2000/s", 2000.0, 2000),
        ("100/m", 100 / 60, 2),
        ("5000/h,burst=50", 5000 / 3600, 50),
        (" 2.5 / second , burst = 10 ", 2.5, 10),
        ("1/h", 1 / 3600, 1),
    ],
)
def test_a_rate_is_requests_per_unit_with_a_burst(text: str, per_second: float, burst: int) -> None:
    rate = parse_rate(text)
    assert rate is not None
    assert rate.per_second == pytest.approx(per_second) and rate.burst == burst


@pytest.mark.parametrize(
    "text",
    [
        "2000",
        "2000/d",
        "-1/s",
        "0/s",
        "fast",
        "10/s,burst=0",
        "10/s,burst=x",
        "1/0s",
        # Too large to be a float (an OverflowError, not a message), or too slow for any
        # Retry-After (an infinite one: a 500 on the first refused request).
        "9" * 400 + "/s",
        "0." + "0" * 320 + "1/s",
        "0.01/h",
        "10/s,burst=" + "9" * 5000,
        "10/s,burst=99999999999",
    ],
)
def test_a_bad_rate_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="2000/s"):
        parse_rate(text)


def test_off_means_no_limit() -> None:
    assert parse_rate("off") is None and parse_rate("0") is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_lets_a_burst_through_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Rate(per_second=2.0, burst=3, text="2/s,burst=3"), clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") == pytest.approx(0.5)  # one token comes back every 0.5 s
    assert limiter.take("b") is None  # another caller has its own bucket
    clock.now += 0.5
    assert limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 100  # a long pause refills up to the burst, no further
    assert [limiter.take("a") for _ in range(4)][-1] is not None


def test_idle_buckets_are_forgotten_and_memory_stays_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Rate(per_second=1.0, burst=2, text="1/s,burst=2"), max_buckets=100, clock=clock)
    for n in range(50):
        limiter.take(n)
    clock.now += SWEEP_PERIOD_S  # long enough for every one of them to have refilled
    limiter.take("newcomer")
    assert len(limiter) == 1
    for n in range(10_000):  # a flood of new callers (addresses)
        limiter.take(f"address-{n}")
    assert len(limiter) <= 100


def rate_limited(metrics_text: str) -> dict[str, float]:
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics_text.splitlines()
        if line.startswith("tlytics_requests_rate_limited_total")
    }


async def test_over_the_limit_is_429_with_retry_after_per_key(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    app = make_app(
        write_keys=(WRITE_A, WRITE_B),
        read_keys=(READ_KEY,),
        rate_limit=parse_rate(f"{NO_REFILL},burst=3"),
        read_rate_limit=parse_rate(f"{NO_REFILL},burst=2"),
    )
    client = await aiohttp_client(app)
    for _ in range(3):
        assert (await client.post("/events", json=[{"key": "a"}], headers=bearer(WRITE_A))).status == 200
    limited = await client.post("/events", json=[{"key": "a"}], headers=bearer(WRITE_A))
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) >= 1
    body = await limited.json()
    assert body["rate_limit"] == f"{NO_REFILL},burst=3" and body["retry_after_s"] > 0
    assert "for this key" in body["error"]
    assert (await client.post("/batch", json={"events": [{"key": "a"}]}, headers=bearer(WRITE_A))).status == 429
    assert spool_count(app) == 3  # a limited request is not accepted
    # Another key has its own budget; reads have theirs, untouched by the writes.
    assert (await client.post("/events", json=[{"key": "b"}], headers=bearer(WRITE_B))).status == 200
    assert (await client.get("/stats", headers=bearer(READ_KEY))).status == 200
    assert (await client.get("/view", headers=bearer(READ_KEY))).status == 200
    assert (await client.get("/keys", headers=bearer(READ_KEY))).status == 429
    # Open routes and refused requests are never limited (nor counted).
    for _ in range(5):
        assert (await client.get("/health")).status == 200
        assert (await client.get("/whoami", headers=bearer(READ_KEY))).status == 200
        assert (await client.post("/events", json=[{"key": "c"}])).status == 401
    # /metrics is a read too, and this key's reads are spent: the figures are read directly.
    assert (await client.get("/metrics", headers=bearer(READ_KEY))).status == 429
    counted = rate_limited(app_metrics_text(app))
    assert counted == {
        'tlytics_requests_rate_limited_total{limit="write",scope="write"}': 2.0,
        'tlytics_requests_rate_limited_total{limit="read",scope="read"}': 2.0,  # /keys, /metrics
    }


def app_metrics_text(app: web.Application) -> str:
    return generate_latest(app[METRICS].registry).decode()


async def test_without_keys_the_limit_is_per_client_address(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app(rate_limit=parse_rate(f"{NO_REFILL},burst=2")))
    statuses = [(await client.post("/events", json=[{"key": "a"}])).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = await client.post("/events", json=[{"key": "a"}], headers=bearer(WRITE_A))  # unknown key: no key
    assert limited.status == 429
    assert "for this client address" in (await limited.json())["error"]
    assert (await client.get("/view")).status == 200  # reads are not limited here
    metrics = await (await client.get("/metrics")).text()
    assert rate_limited(metrics) == {'tlytics_requests_rate_limited_total{limit="write",scope="none"}': 2.0}


async def test_the_client_library_delivers_everything_through_a_limit(
    aiohttp_client: Any, make_app: Callable[..., web.Application], tmp_path: Path
) -> None:
    app = make_app(write_keys=(WRITE_A,), rate_limit=parse_rate("2/s,burst=1"))
    server = await aiohttp_client(app)
    client = Client(
        Config(
            server_url=str(server.make_url("")).rstrip("/"),
            spool_dir=tmp_path / "client-spool",
            flush_period=0.05,
            max_batch=1,
            write_key=WRITE_A,
        )
    )
    try:
        for n in range(4):
            client.emit(Event(key="limited", data={"n": n}))
        # flush() blocks: off the loop, so that the server on this loop keeps answering.
        await asyncio.to_thread(client.flush, 60.0)
    finally:
        await asyncio.to_thread(client.close, 10.0)
    await app_flush(app)
    assert store_count(app) == 4  # every event, though most requests were refused at first
    limited = rate_limited(app_metrics_text(app))
    assert limited['tlytics_requests_rate_limited_total{limit="write",scope="write"}'] >= 1


def test_an_ipv6_client_has_one_budget_per_64_not_per_address() -> None:
    """A host usually holds a whole IPv6 /64: a budget per address gave it 2^64 of them."""
    limiter = RateLimiter(Rate(per_second=1 / 3600, burst=1, text="1/h"), clock=FakeClock())
    assert limiter.take(address_caller("2001:db8:1:2::1")) is None
    assert limiter.take(address_caller("2001:db8:1:2:ffff::7")) is not None  # same /64: refused
    assert limiter.take(address_caller("2001:db8:1:3::1")) is None  # another /64
    assert limiter.take(address_caller("198.51.100.7")) is None
    assert limiter.take(address_caller("::ffff:198.51.100.7")) is not None  # the same IPv4 client
    assert limiter.take(address_caller("198.51.100.8")) is None
    assert address_caller("fe80::1%eth0") == address_caller("fe80::2") and address_caller(None) == ""


def test_a_full_table_never_hands_out_fresh_budgets() -> None:
    """Cycling through more addresses than the table holds (60k addresses of one IPv6 /48 in
    the issue) used to evict the oldest half and give every address a fresh budget: now the
    newcomers of a full table share one overflow bucket, and the old buckets stay."""
    clock = FakeClock()
    limiter = RateLimiter(Rate(per_second=1 / 3600, burst=1, text="1/h"), max_buckets=100, clock=clock)
    granted = 0
    for _ in range(3):
        for n in range(600):
            granted += limiter.take(f"address-{n}") is None
        clock.now += 1.0
    # 100 buckets of one token each, plus the overflow bucket's one token: never more.
    assert granted == 101
    assert len(limiter) == 100
    clock.now += SWEEP_PERIOD_S  # not long enough to refill a 1/h bucket: nothing is forgotten
    assert limiter.take("address-599") is not None and limiter.take("address-0") is not None


async def test_failed_authentications_are_limited_per_address(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    """Guessing keys: past the failure budget, the address gets 429 before its key is even
    looked at (a right guess must not stand out), whatever --rate-limit says."""
    client = await aiohttp_client(make_app(read_keys=(READ_KEY,), auth_failure_rate=parse_rate("1/h,burst=3")))
    guesses = [(await client.get("/view", headers=bearer(f"guess-{n:020d}"))).status for n in range(5)]
    assert guesses == [401, 401, 401, 429, 429]
    right = await client.get("/view", headers=bearer(READ_KEY))
    assert right.status == 429 and int(right.headers["Retry-After"]) >= 1
    assert "failed authentications" in (await right.json())["error"]
    assert (await client.get("/health")).status == 200  # open routes are never limited
    metrics = generate_latest(client.app[METRICS].registry).decode()
    assert rate_limited(metrics) == {'tlytics_requests_rate_limited_total{limit="auth_failures",scope="none"}': 3.0}


async def test_a_right_key_does_not_use_the_failure_budget(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    client = await aiohttp_client(make_app(read_keys=(READ_KEY,), auth_failure_rate=parse_rate("1/h,burst=2")))
    assert [(await client.get("/view", headers=bearer(READ_KEY))).status for _ in range(10)] == [200] * 10
    assert (await client.get("/view")).status == 401
