"""Spool.remove deletes runs of consecutive keys by range: exactly the keys given, whatever
their order, gaps and repeats, and nothing between or beside them."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tlytics.spool import Spool


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=59), max_size=80), st.randoms(use_true_random=False))
def test_remove_takes_exactly_the_keys_given(picks: list[int], shuffler: random.Random) -> None:
    with tempfile.TemporaryDirectory() as directory:
        spool = Spool(Path(directory) / "spool")
        try:
            keys = spool.append_many([f"entry {n}".encode() for n in range(60)])
            chosen = [keys[index] for index in picks]
            shuffler.shuffle(chosen)
            spool.remove(chosen)
            left = [key for key, _ in spool.peek(100)]
            assert left == [key for key in keys if key not in set(chosen)]
            assert spool.count() == len(left)
        finally:
            spool.close()


def test_a_long_run_and_keys_already_gone(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    try:
        keys = spool.append_many([b"x"] * 3000)
        spool.remove(keys[10:20])
        spool.remove(keys[:2500])  # a run over keys already removed, past 500 keys per statement
        assert [key for key, _ in spool.peek(1000)] == keys[2500:]
        assert spool.count() == 500
    finally:
        spool.close()
