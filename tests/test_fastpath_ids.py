"""The fast path's ids for a request: the block's ids `first + i`, as 32 hex digits each, the
same text formatting each integer gives (the prefix-and-table shortcut must not change one)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tlytics.ids import BLOCK_MAX, uuid7_block
from tlytics.ingest.fastpath import _block_ids, fast_spool_entry
from tlytics.spool.entry import decode_spool_entry


# No deadline: the first call builds a 65,536-entry table, over hypothesis's 200 ms on a busy machine.
@settings(deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 128) - 1), st.integers(min_value=1, max_value=BLOCK_MAX))
def test_block_ids_are_the_integers_in_hex(any_id: int, count: int) -> None:
    first = any_id & ~(BLOCK_MAX - 1)  # where uuid7_block starts a block
    assert _block_ids(first, count) == [f"{first + i:032x}" for i in range(count)]


def test_a_requests_ids_are_consecutive_and_new() -> None:
    body = b"[" + b",".join(b'{"key":"k","data":{"n":%d}}' % n for n in range(300)) + b"]"
    before = uuid7_block(1)
    accepted = fast_spool_entry(body, batch=False, now_us=1, max_events=1000)
    assert accepted is not None
    _, rows = decode_spool_entry(accepted[0])
    ids = [int(row[0], 16) for row in rows]
    assert len(ids) == 300 and ids == list(range(ids[0], ids[0] + 300)) and ids[0] > before
