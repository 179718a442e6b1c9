"""UUIDv7 ids: right version and variant, and strictly increasing within a process."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

from tlytics.ids import uuid7_bytes, uuid7_int


def test_version_variant_and_time() -> None:
    before_ms = time.time_ns() // 1_000_000
    value = uuid.UUID(int=uuid7_int())
    after_ms = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before_ms <= value.int >> 80 <= after_ms + 1


def test_strictly_increasing_even_within_one_millisecond() -> None:
    ids = [uuid7_bytes() for _ in range(50_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_unique_across_threads() -> None:
    results: list[list[bytes]] = [[] for _ in range(4)]

    def make(slot: int) -> None:
        results[slot] = [uuid7_bytes() for _ in range(10_000)]

    threads = [threading.Thread(target=make, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for result in results for i in result]
    assert len(set(every)) == 40_000
