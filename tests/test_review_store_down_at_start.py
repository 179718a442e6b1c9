"""A writer whose store cannot be opened as it starts (PostgreSQL down), with nothing to
write, tries again with the same capped back-off a failing batch gets, not every flush period:
at `--flush 100ms` it logged `writer_store_not_open` (and dialled PostgreSQL) ten times a
second for as long as PostgreSQL stayed down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tlytics.errors import StoreError
from tlytics.writer.drain import DrainResult, drain_batch
from tlytics.writer.resources import open_store
from tlytics.writer.scheduler import WriteScheduler


class _StoreDown:
    """A writer whose store refuses every open; its spool is empty."""

    def __init__(self) -> None:
        self.opens: list[float] = []

    async def execute(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn is open_store:
            self.opens.append(time.monotonic())
            raise StoreError("connection refused: is PostgreSQL running?")
        assert fn is drain_batch, fn
        return DrainResult(entries=0, events=0, inserted=0, quarantined=0)

    async def close(self) -> None:
        pass


async def test_a_store_down_at_start_is_tried_again_with_back_off() -> None:
    executor = _StoreDown()
    writer = WriteScheduler(
        executor,  # type: ignore[arg-type]  # a stand-in: only execute and close are used
        flush_period_s=0.01,
        batch_max_entries=100,
        batch_max_events=100,
        retry_delay_max_s=5.0,
    )
    writer.start()
    try:
        deadline = time.monotonic() + 60
        while len(executor.opens) < 5:  # the first tries come fast either way
            assert time.monotonic() < deadline, "the writer stopped trying to open its store"
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # an upper bound on tries: a busy machine only lowers it
    finally:
        await writer.close(drain_timeout_s=1.0)
    gaps = [later - earlier for earlier, later in zip(executor.opens, executor.opens[1:], strict=False)]
    # Backing off (0.2 s, 0.4 s, 0.8 s, 1.6 s, ...): 5 or 6 tries in all; every 10 ms: hundreds.
    assert len(executor.opens) <= 12, f"{len(executor.opens)} opens, gaps {[round(g, 3) for g in gaps]}"
    assert gaps[-1] >= 0.3, gaps
