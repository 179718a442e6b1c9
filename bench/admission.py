"""What the access check and the rate limit cost per request: `auth.admit` (route level, key
lookup, token bucket) on a POST /events request, timed in a loop, in each configuration the
server can run in; and, for the key lookup alone, the SHA-256 digest lookup against comparing
the token with every key by `hmac.compare_digest` (what it replaced), for 1, 10 and 100 keys.

    python -m bench.admission            # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bench.ingest import RESULTS
from tlytics.ingest import Settings, create_app
from tlytics.ingest.auth import admit
from tlytics.ingest.keys import ApiKey, KeyRing
from tlytics.rate import parse_rate

KEY = "bench-write-key-0123456789"


def best_us(function: Callable[[], Any], iterations: int, repeats: int = 5) -> float:
    """The best of `repeats` loops, in µs per call (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(iterations):
            function()
        best = min(best, time.perf_counter() - started)
    return best / iterations * 1e6


async def admitted_request(settings: Settings, headers: dict[str, str]) -> tuple[web.Request, web.AppRunner]:
    """A POST /events request to a started app (its keys are loaded at start), routed as
    aiohttp's handler routes it before the middleware runs; clean the runner up after."""
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    request = make_mocked_request("POST", "/events", headers=headers, app=app)
    match_info = await app.router.resolve(request)
    match_info.add_app(app)
    request._match_info = match_info
    return request, runner


async def admission_figures(iterations: int, directory: Path) -> dict[str, float]:
    base = Settings(host="127.0.0.1", db_path=directory / "bench.db", writer_process=False)
    configurations = {
        "no keys, no limit": (base, {}),
        "a write key": (Settings(**{**vars(base), "write_keys": (KEY,)}), {"Authorization": f"Bearer {KEY}"}),
        "a write key and --rate-limit": (
            Settings(**{**vars(base), "write_keys": (KEY,), "rate_limit": parse_rate("1000000000/s")}),
            {"Authorization": f"Bearer {KEY}"},
        ),
        "no keys, --rate-limit (per address)": (
            Settings(**{**vars(base), "rate_limit": parse_rate("1000000000/s")}),
            {},
        ),
    }
    figures = {}
    for name, (settings, headers) in configurations.items():
        request, runner = await admitted_request(settings, headers)
        try:
            figures[name] = best_us(lambda request=request: admit(request), iterations)  # type: ignore[misc]
        finally:
            await runner.cleanup()
    return figures


def lookup_figures(iterations: int) -> dict[str, float]:
    figures = {}
    for count in (1, 10, 100):
        secrets = [f"key-{n:04d}-0123456789abcdef" for n in range(count)]
        ring = KeyRing(ApiKey.of("write", secret, str(n)) for n, secret in enumerate(secrets))
        token = secrets[-1].encode()
        encoded = [secret.encode() for secret in secrets]

        def compare_each(token: bytes = token, encoded: list[bytes] = encoded) -> bool:
            found = False
            for secret in encoded:
                found |= hmac.compare_digest(token, secret)
            return found

        figures[f"digest lookup, {count} keys"] = best_us(lambda ring=ring, token=token: ring.find(token), iterations)  # type: ignore[misc]
        figures[f"compare_digest with each, {count} keys"] = best_us(compare_each, iterations)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        admission = asyncio.run(admission_figures(arguments.iterations, Path(directory)))
    lookup = lookup_figures(arguments.iterations)
    baseline = admission["no keys, no limit"]
    print("auth.admit on POST /events, µs per request (best of 5 loops):")
    for name, microseconds in admission.items():
        print(f"  {name:40} {microseconds:6.2f} µs  ({microseconds / baseline:4.2f}x the no-key baseline)")
    print("the key lookup alone, µs per request:")
    for name, microseconds in lookup.items():
        print(f"  {name:40} {microseconds:6.2f} µs")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"admission-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"admit_us": admission, "lookup_us": lookup}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
