"""The values the writer stores for several declared properties at once (one extraction per
insert for all of them, stored in the value index's order) are, byte for byte, those the JSON
reading of each property gives on its own: same kind, same SQL type, same value."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlytics.jsontext import canonical
from tlytics.store.sqlite import SQLiteStore

T0 = 1_735_689_600_000_000
PATHS = ["p", "n.x", "q"]
VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([1.0, 2.5, -0.0, 1e300, 10**20, 2**63, -(2**63), 2**63 - 1]),
    st.sampled_from(["1", "2.5", "abc", "", "a\x00b", "É", "true", "null", " 1", "-0"]),
    st.booleans(),
    st.none(),
    st.sampled_from([{"x": 1}, [1, "a"], [], {}]),
)
MISSING = object()
EVENT = st.fixed_dictionaries(
    {
        "p": st.one_of(st.just(MISSING), VALUES),
        "n": st.one_of(st.just(MISSING), VALUES, st.dictionaries(st.just("x"), VALUES)),
        "q": st.one_of(st.just(MISSING), VALUES),
    }
)
# Each property read alone from the stored events, as the filters read it.
REFERENCE = (
    "SELECT ts, id, CASE json_type(data, ?1) WHEN 'integer' THEN 1 WHEN 'real' THEN 1 WHEN 'text' THEN 2"
    " WHEN 'true' THEN 3 WHEN 'false' THEN 4 WHEN 'null' THEN 5 WHEN 'object' THEN 6 WHEN 'array' THEN 7 END,"
    " typeof(json_extract(data, ?1)), quote(json_extract(data, ?1)) FROM events"
    " WHERE json_type(data, ?1) IS NOT NULL ORDER BY ts, id"
)
STORED = (
    "SELECT pv.ts, pv.id, pv.kind, typeof(pv.value), quote(pv.value) FROM property_values pv"
    " JOIN declared_properties d ON d.number = pv.property WHERE d.path = ? ORDER BY pv.ts, pv.id"
)


def rows_of(events: list[dict[str, Any]], first: int) -> list[tuple[bytes, str, int, int, str]]:
    made = []
    for offset, event in enumerate(events):
        n = first + offset
        data = {name: value for name, value in event.items() if value is not MISSING}
        text = canonical(json.dumps(data).encode()).decode()
        made.append((uuid.UUID(int=n + 1).bytes, f"k{n % 2}", T0 + n * 60_000_000, T0, text))
    return made


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(EVENT, min_size=0, max_size=12), min_size=1, max_size=3))
def test_stored_values_are_each_propertys_json_reading(batches: list[list[dict[str, Any]]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "events.db", declared_properties=PATHS)
        try:
            first = 0
            for events in batches:
                store.insert(rows_of(events, first))
                first += len(events)
            connection = store._write_connection
            for path in PATHS:
                expected = connection.execute(REFERENCE, ("$." + path,)).fetchall()
                stored = connection.execute(STORED, (path,)).fetchall()
                assert stored == expected, path
        finally:
            store.close()
