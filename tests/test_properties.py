"""Property-based tests (hypothesis): validation never fails in an unplanned way, and the fast
path accepts only what the reference rules accept and spools it to the same bytes, however the
JSON is spelt; the spool keeps every unremoved entry
exactly once and in order, whatever the sequence of appends, peeks, removes and reopenings."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from tlytics.errors import InvalidRequest
from tlytics.ingest.fastpath import fast_spool_entry
from tlytics.ingest.validation import reference_spool_entry
from tlytics.spool import Spool
from tlytics.spool.entry import decode_spool_entry

NOW_US = 1_700_000_000_000_000

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keys = st.text(min_size=0, max_size=210) | st.sampled_from(
    ["page_view", "a", "x" * 200, "x" * 201, "tab\t", "é" * 200, "nl\n", "a\u202eb", " ", "\ufeff"]
)
ints = st.integers(-(2**63), 2**63 - 1)
ids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | st.text(max_size=40) | ints
timestamps = (
    st.sampled_from(
        [
            "2025-08-25T10:00:00Z",
            "2025-08-25T10:00:00.123456789+02:00",
            "2025-08-25 10:00:00z",
            "2025-08-25T10:00:00",
            "2025-13-01T00:00:00Z",
            "yesterday",
            "9999-12-31T23:59:59-12:00",
            "0001-01-01T00:30:00+01:00",
            "0999-01-01T00:00:00Z",
        ]
    )
    | ints
)
events = (
    st.fixed_dictionaries(
        {},
        optional={"key": keys, "id": ids, "timestamp": timestamps, "data": json_values, "extra": json_values},
    )
    | json_values
)


@st.composite
def spelt(draw: st.DrawFn, value: Any) -> str:
    """JSON text of `value` spelt as some sender might: any whitespace, numbers in other
    notations, escaped characters, and now and then a key given twice or a number too large."""
    space = draw(st.sampled_from(["", "", " ", "\n  ", "\t"]))
    if isinstance(value, dict):
        members = [draw(spelt(name)) + space + ":" + space + draw(spelt(item)) for name, item in value.items()]
        if members and draw(st.integers(0, 30)) == 0:
            members.append(members[0])  # a key twice
        return "{" + space + ("," + space).join(members) + space + "}"
    if isinstance(value, list):
        return "[" + space + ("," + space).join(draw(spelt(item)) for item in value) + space + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return draw(st.sampled_from([str(value), f"{value}E0", f"{value}.0", str(value)]))
    if isinstance(value, float):
        return draw(st.sampled_from([repr(value), f"{value:E}", repr(value), "1e400"]))
    return json.dumps(value, ensure_ascii=draw(st.booleans()))


def spool_or_error(body: bytes, *, fast: bool) -> tuple[bytes, int] | None:
    limits = {"batch": False, "now_us": NOW_US, "max_events": 10_000, "max_event_bytes": 1 << 20}
    if fast:
        return fast_spool_entry(body, **limits)  # type: ignore[arg-type]
    try:
        return reference_spool_entry(body, **limits)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        assert exc.message
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(events, max_size=6))
def test_validation_is_total_and_the_fast_path_spools_what_the_reference_spools(
    data: st.DataObject, raw_events: list[Any]
) -> None:
    # Every event gets an id, so the two paths' entries can be compared byte for byte.
    for raw in raw_events:
        if isinstance(raw, dict) and raw.get("id") is None:
            raw["id"] = str(uuid.uuid4())
    body = data.draw(spelt(raw_events)).encode("utf-8", "surrogatepass")
    reference = spool_or_error(body, fast=False)
    fast = spool_or_error(body, fast=True)
    if fast is None:
        return
    assert reference is not None, f"the fast path accepted {body!r}"
    assert fast == reference, "the two paths spooled different bytes"
    for (_, _, _, stored), raw in zip(decode_spool_entry(fast[0])[1], raw_events, strict=True):
        assert json.loads(bytes(stored)) == (raw.get("data") or {})


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
        for key, value in zip(keys, values, strict=True):
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
