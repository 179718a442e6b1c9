"""Property-based tests (hypothesis): validation never fails in an unplanned way and the fast
path never accepts what the reference rules refuse; the spool keeps every unremoved entry
exactly once and in order, whatever the sequence of appends, peeks, removes and reopenings."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from tlytics.errors import InvalidEvent
from tlytics.events import normalize_events
from tlytics.ingest.codec import decode_spool_entry, fast_spool_entry
from tlytics.spool import Spool

NOW_US = 1_700_000_000_000_000

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
keys = st.text(min_size=0, max_size=210) | st.sampled_from(["page_view", "a", "x" * 200, "x" * 201, "tab\t", "é" * 200, "nl\n"])
ints = st.integers(-(2**63), 2**63 - 1)  # what a JSON body can carry through orjson
ids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | st.text(max_size=40) | ints
timestamps = st.sampled_from(
    ["2025-08-25T10:00:00Z", "2025-08-25T10:00:00.123456789+02:00", "2025-08-25 10:00:00z", "2025-08-25T10:00:00", "2025-13-01T00:00:00Z", "yesterday"]
) | ints
events = st.fixed_dictionaries(
    {},
    optional={"key": keys, "id": ids, "timestamp": timestamps, "data": json_values, "extra": json_values},
) | json_values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, max_size=6))
def test_validation_is_total_and_the_fast_path_is_a_subset(raw_events: list[Any]) -> None:
    try:
        reference = normalize_events(raw_events, NOW_US)
    except InvalidEvent as exc:
        reference = None
        assert exc.message
    body = orjson.dumps(raw_events)
    fast = fast_spool_entry(body, batch=False, now_us=NOW_US, max_events=10_000)
    if fast is None:
        return
    assert reference is not None, f"fast path accepted {body!r}"
    _, spooled = decode_spool_entry(fast[0])
    for (_, key, ts, data), (_, ref_key, ref_ts, ref_data) in zip(spooled, reference):
        assert (key, ts, orjson.loads(bytes(data))) == (ref_key, ref_ts, ref_data)


class SpoolMachine(RuleBasedStateMachine):
    """The spool against a model: an ordered mapping of key to value."""

    entries = Bundle("entries")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-prop-"))
        self.spool = Spool(self.directory)
        self.model: dict[int, bytes] = {}

    @rule(target=entries, values=st.lists(st.binary(max_size=64), min_size=1, max_size=5))
    def append(self, values: list[bytes]) -> Any:
        keys = self.spool.append_many(values)
        assert len(keys) == len(values)
        for key, value in zip(keys, values):
            assert key not in self.model
            self.model[key] = value
        return keys[0]

    @rule(count=st.integers(min_value=0, max_value=8))
    def peek(self, count: int) -> None:
        assert self.spool.peek(count) == list(self.model.items())[:count]

    @rule(key=entries)
    def remove(self, key: int) -> None:
        self.spool.remove([key])
        self.model.pop(key, None)

    @rule()
    def remove_oldest_two(self) -> None:
        oldest = [key for key, _ in self.spool.peek(2)]
        self.spool.remove(oldest)
        for key in oldest:
            del self.model[key]

    @rule()
    def reopen(self) -> None:
        # A new process opening the same directory (the old object is simply dropped).
        self.spool = Spool(self.directory)

    @invariant()
    def everything_unremoved_is_there_once_and_in_order(self) -> None:
        assert self.spool.peek(10_000) == list(self.model.items())
        assert self.spool.count() == len(self.model)

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.directory, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestSpoolProperties = SpoolMachine.TestCase
