"""The store contract: what every backend must do, run against each backend in
`store_backends.BACKENDS` (SQLite and PostgreSQL).

Only the `StoreWriter` and `StoreReader` protocols are used here, never a backend's insides,
so a second backend passes the very same tests.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest

from tests.store_backends import BACKENDS, StoreBackend
from tlytics.ingest.filter_language import parse_operator, parse_value
from tlytics.store import EventFilter, Position, StoreReader, StoreRow, StoreWriter
from tlytics.store.base import Operator, exact_unique_counts

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z, µs
MINUTE = 60_000_000
QUARTER = 15 * MINUTE  # the rollups' bucket


def row(n: int, ts: int, key: str = "k", data: Any = None, *, data_json: str | None = None) -> StoreRow:
    """Event n (its id is UUID n) at `ts`; `data` as JSON, or `data_json` as that exact text."""
    if data_json is None:
        data_json = orjson.dumps({"n": n} if data is None else data).decode()
    return (uuid.UUID(int=n).bytes, key, ts, ts, data_json)


def event_id(n: int) -> str:
    return str(uuid.UUID(int=n))


@dataclass
class OpenStore:
    writer: StoreWriter
    reader: StoreReader


@pytest.fixture(params=sorted(BACKENDS))
def store_backend(request: pytest.FixtureRequest) -> Iterator[StoreBackend]:
    backend = BACKENDS[request.param](request)
    yield backend
    backend.close()


@pytest.fixture
def store(store_backend: StoreBackend) -> OpenStore:
    return OpenStore(store_backend.open_writer(), store_backend.open_reader())


def where(**properties: str) -> EventFilter:
    return EventFilter(where=tuple((path, parse_value(value)) for path, value in properties.items()))


def ids(events: Any) -> list[str]:
    return [event.id for event in events]


# Inserting and counting


def test_insert_is_idempotent_and_counts_new_rows(store: OpenStore) -> None:
    assert store.writer.insert([row(1, 10), row(2, 20), row(1, 10)]) == 2
    assert store.writer.insert([row(2, 20), row(3, 30)]) == 1
    assert store.writer.insert([]) == 0
    assert store.reader.count() == 3


def test_a_reopened_store_keeps_its_events_and_still_ignores_their_ids(store_backend: StoreBackend) -> None:
    first = store_backend.open_writer()
    first.insert([row(n, T0 + n) for n in range(1, 4)])
    first.close()
    reopened = store_backend.open_writer()
    assert reopened.insert([row(3, T0 + 3)]) == 0
    assert store_backend.open_reader().count() == 3


def test_an_event_reads_back_as_it_was_stored(store: OpenStore) -> None:
    data = '{"s":"é \\u00e9","big":12345678901234567890123,"e":1E2}'
    store.writer.insert([(uuid.UUID(int=7).bytes, "payment", T0 + 1, T0 + 2, data)])
    (event,) = store.reader.page(1, 10).events
    assert (event.id, event.key, event.timestamp_us, event.received_at_us, event.data_json) == (
        event_id(7),
        "payment",
        T0 + 1,
        T0 + 2,
        data,
    )


# Pages and cursors


def test_pages_are_newest_first_with_ties_broken_by_id(store: OpenStore) -> None:
    store.writer.insert([row(n, ts=T0 + n // 2) for n in range(1, 8)])
    first = store.reader.page(1, 3)
    assert first.total == 7
    assert ids(first.events) == [event_id(n) for n in (7, 6, 5)]
    assert [e.data_json for e in store.reader.page(3, 3).events] == ['{"n":1}']
    assert store.reader.page(4, 3).events == []
    assert ids(store.reader.page(1, 3, ascending=True).events) == [event_id(n) for n in (1, 2, 3)]


def test_a_page_far_beyond_the_end_is_empty(store: OpenStore) -> None:
    store.writer.insert([row(1, T0)])
    page = store.reader.page(2**62, 1000)
    assert (page.total, page.events, page.next_position) == (1, [], None)


@pytest.mark.parametrize("ascending", [False, True])
def test_a_cursor_walks_every_event_once_in_order(store: OpenStore, ascending: bool) -> None:
    store.writer.insert([row(n, ts=T0 + (n % 5) * MINUTE) for n in range(1, 24)])
    expected = ids(store.reader.page(1, 100, ascending=ascending).events)
    seen: list[str] = []
    after: Position | None = None
    for _ in range(100):
        page = store.reader.page(1, 4, after=after, ascending=ascending)
        assert page.total == 23
        seen += ids(page.events)
        after = page.next_position
        if after is None:
            break
    assert seen == expected and len(set(seen)) == 23
    timestamps = [e.timestamp_us for e in store.reader.page(1, 100, ascending=ascending).events]
    assert timestamps == sorted(timestamps, reverse=not ascending)


def test_the_last_full_page_has_no_next_position(store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n) for n in range(1, 5)])
    assert store.reader.page(1, 2).next_position is not None
    assert store.reader.page(2, 2).next_position is None


# Filters


def test_keys_and_times_filter_and_the_total_counts_the_matches(store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n * MINUTE, key="a" if n % 2 else "b") for n in range(10)])
    since, until = T0 + 2 * MINUTE, T0 + 7 * MINUTE  # since inclusive, until exclusive
    page = store.reader.page(1, 2, where=EventFilter(keys=("a",), since_us=since, until_us=until))
    assert page.total == 2  # n = 3, 5
    assert ids(page.events) == [event_id(5), event_id(3)]
    assert store.reader.page(1, 10, where=EventFilter(keys=("a", "b"), since_us=since)).total == 8
    assert store.reader.page(1, 10, where=EventFilter(until_us=since)).total == 2


# Each event's data.v, as JSON text.
TYPED = {
    "int_one": "1",
    "real_one": "1.0",
    "string_one": '"1"',
    "true": "true",
    "false": "false",
    "null": "null",
    "zero": "0",
    "string_true": '"true"',
    "string_quote": '"\\"1\\""',
    "big": "99999999999999999999999",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", {"int_one", "real_one", "string_one"}),  # a number, and its string form; never true
        ("1.0", {"int_one", "real_one"}),
        ("true", {"true"}),
        ("false", {"false"}),  # not 0
        ("null", {"null"}),  # not a missing property
        ("0", {"zero"}),
        ('"1"', {"string_one"}),  # quoted: only the string
        ('"true"', {"string_true"}),
        ('"\\"1\\""', {"string_quote"}),
        ("99999999999999999999999", {"big"}),  # beyond 64 bits: compared by value
        ("01", set()),  # not a JSON number: a string, and none is "01"
    ],
)
def test_where_matches_by_json_type(store: OpenStore, value: str, expected: set[str]) -> None:
    rows = [row(n, T0 + n, key=name, data_json=f'{{"v":{v}}}') for n, (name, v) in enumerate(TYPED.items(), start=1)]
    store.writer.insert([*rows, row(99, T0, key="missing", data={})])
    page = store.reader.page(1, 100, where=where(v=value))
    assert {e.key for e in page.events} == expected
    assert page.total == len(expected)
    ((count, _),) = store.reader.bucket_counts([T0], T0 + QUARTER, where(v=value), None)
    assert count == len(expected)


def test_where_reaches_nested_properties_and_all_conditions_hold(store: OpenStore) -> None:
    store.writer.insert(
        [
            row(1, T0, data={"user": {"id": 5}, "page": "/"}),
            row(2, T0, data={"user": {"id": 5}, "page": "/b"}),
            row(3, T0, data={"user": {"id": 6}, "page": "/"}),
        ]
    )
    assert ids(store.reader.page(1, 10, where=where(**{"user.id": "5", "page": "/"})).events) == [event_id(1)]


# Deleting: erasure and retention


def test_erasure_deletes_and_remembers_the_ids(store_backend: StoreBackend, store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n, data={"user": n % 2}) for n in range(1, 11)])
    assert store.writer.delete_matching(where(user="1"), max_rows=3, remember_ids=True) == 3
    assert store.writer.delete_matching(where(user="1"), max_rows=100, remember_ids=True) == 2
    assert store.writer.delete_matching(where(user="1"), max_rows=100, remember_ids=True) == 0
    assert store.reader.count() == 5
    erased = [row(n, T0 + n, data={"user": 1}) for n in (1, 3)]
    assert store.writer.insert(erased) == 0  # a retry or a replay never brings them back
    store.writer.close()
    assert store_backend.open_writer().insert(erased) == 0  # not even after a restart
    assert store.reader.count() == 5


def test_retention_deletes_old_events_without_remembering_them(store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n * MINUTE) for n in range(10)])
    cutoff = EventFilter(until_us=T0 + 4 * MINUTE)
    assert store.writer.delete_matching(cutoff, max_rows=3, remember_ids=False) == 3
    assert store.writer.delete_matching(cutoff, max_rows=3, remember_ids=False) == 1
    assert store.reader.count() == 6
    assert store.reader.page(1, 10, ascending=True).events[0].timestamp_us == T0 + 4 * MINUTE
    assert store.writer.insert([row(0, T0)]) == 1  # not erased: it may come back


# Rollups: keys, bucket counts, breakdowns


def test_keys_summary_counts_and_first_and_last_seen(store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n * MINUTE, key="a") for n in range(5)] + [row(10, T0 + 2, key="b")])
    store.writer.insert([row(0, T0, key="a"), row(11, T0 - MINUTE, key="b")])  # a duplicate, a new one
    assert store.reader.keys_summary() == [("a", 5, T0, T0 + 4 * MINUTE), ("b", 2, T0 - MINUTE, T0 + 2)]
    store.writer.delete_matching(EventFilter(keys=("b",)), max_rows=10, remember_ids=True)
    store.writer.delete_matching(EventFilter(until_us=T0 + MINUTE), max_rows=10, remember_ids=False)
    # First and last seen stay true after deletions; a key with no events left is not listed.
    assert store.reader.keys_summary() == [("a", 4, T0, T0 + 4 * MINUTE)]


def test_bucket_counts_agree_with_the_events(store: OpenStore) -> None:
    # Events every 7 minutes over 3 hours, two keys, a user property.
    rows = [row(n, T0 + n * 7 * MINUTE, key="ab"[n % 2], data={"user": n % 3}) for n in range(26)]
    store.writer.insert(rows)
    store.writer.delete_matching(EventFilter(keys=("a",), until_us=T0 + 30 * MINUTE), max_rows=10, remember_ids=True)
    stored = [r for r in rows if not (r[1] == "a" and r[2] < T0 + 30 * MINUTE)]
    # Ragged buckets (not multiples of 15 minutes), clipped by since/until.
    starts = [T0 - 13 * MINUTE, T0 + 22 * MINUTE, T0 + 70 * MINUTE, T0 + 121 * MINUTE]
    end = T0 + 200 * MINUTE
    for window in (
        EventFilter(),
        EventFilter(keys=("b",)),
        EventFilter(since_us=T0 + 31 * MINUTE, until_us=T0 + 150 * MINUTE),
        EventFilter(keys=("a",), since_us=T0 + 5 * MINUTE),
        where(user="1"),
    ):
        expected = []
        for start, stop in itertools.pairwise([*starts, end]):
            low = max(start, window.since_us or start)
            high = min(stop, window.until_us or stop)
            matching = [
                r
                for r in stored
                if low <= r[2] < high
                and (not window.keys or r[1] in window.keys)
                and (not window.where or orjson.loads(r[4])["user"] == 1)
            ]
            expected.append((len(matching), None))
        assert store.reader.bucket_counts(starts, end, window, None) == expected, window


def test_bucket_counts_with_distinct_values(store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n * MINUTE, data={"user": n % 3} if n != 4 else {}) for n in range(10)])
    counts = store.reader.bucket_counts([T0, T0 + 5 * MINUTE], T0 + 10 * MINUTE, EventFilter(), "user")
    assert counts == [(5, 3), (5, 3)]  # the event without a user is counted, not its value


def test_breakdown_tells_json_types_apart_and_counts_missing(store: OpenStore) -> None:
    values: list[Any] = [1, 1, 1.0, "1", True, None, "x", {"a": 1}, [1, 2]]
    rows = [row(n, T0 + n, data={"p": v}) for n, v in enumerate(values)]
    store.writer.insert([*rows, row(50, T0, data={}), row(51, T0, data={"q": 1})])
    result = store.reader.breakdown(EventFilter(), "p", 3)
    assert result.top[0] == (1, 3)  # 1 and 1.0 are one JSON value
    assert (result.total, result.missing) == (11, 2)
    everything = store.reader.breakdown(EventFilter(), "p", 100)
    assert sorted(everything.top, key=repr) == sorted(
        [(1, 3), ("1", 1), (True, 1), (None, 1), ("x", 1), ({"a": 1}, 1), ([1, 2], 1)], key=repr
    )
    filtered = store.reader.breakdown(EventFilter(since_us=T0 + 3), "p", 100)
    assert filtered.total == 6 and filtered.missing == 0


# Lookups


def test_existing_ids_finds_the_stored_among_many(store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n) for n in range(0, 3000, 3)])
    asked = [uuid.UUID(int=n).bytes for n in range(3000)]  # more than one statement's worth
    assert store.reader.existing_ids(asked) == {uuid.UUID(int=n).bytes for n in range(0, 3000, 3)}
    assert store.reader.existing_ids([]) == set()


# Readers and writers side by side; old stores


def test_a_reader_sees_what_the_writer_committed(store: OpenStore) -> None:
    assert store.reader.count() == 0
    store.writer.insert([row(1, T0)])
    assert store.reader.count() == 1 and ids(store.reader.page(1, 1).events) == [event_id(1)]


def test_readers_on_several_threads_at_once(store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n) for n in range(200)])
    barrier = threading.Barrier(4, timeout=30)

    def read(_: int) -> tuple[int, int]:
        barrier.wait()  # all four read at the same moment
        return store.reader.count(), store.reader.page(1, 50, where=EventFilter(since_us=T0 + 100)).total

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(read, range(4))) == [(200, 100)] * 4


def test_a_store_of_the_oldest_schema_is_migrated_at_open(store_backend: StoreBackend) -> None:
    pretty = '{\n  "user": 1,\n  "tags": [1, 2]\n}'
    store_backend.write_oldest_schema(
        [
            (uuid.UUID(int=1).bytes, "a", T0, T0, pretty),
            (uuid.UUID(int=2).bytes, "a", T0 + 20 * MINUTE, T0, "{}"),
            (uuid.UUID(int=3).bytes, "b", T0 + MINUTE, T0, '{"user": 1}'),
        ]
    )
    writer = store_backend.open_writer()
    reader = store_backend.open_reader()
    assert reader.count() == 3
    assert [e.data_json for e in reader.page(1, 10, where=EventFilter(keys=("a",)), ascending=True).events] == [
        '{"user":1,"tags":[1,2]}',
        "{}",
    ]
    assert reader.keys_summary() == [("a", 2, T0, T0 + 20 * MINUTE), ("b", 1, T0 + MINUTE, T0 + MINUTE)]
    assert reader.bucket_counts([T0, T0 + QUARTER], T0 + 2 * QUARTER, EventFilter(), None) == [(2, None), (1, None)]
    assert reader.breakdown(EventFilter(), "user", 5).top == [(1, 2)]
    assert writer.insert([(uuid.UUID(int=1).bytes, "a", T0, T0, "{}"), row(4, T0)]) == 1


# Where operators beyond equality, unique counts, funnels (issue 14, part 3)

# Each event's data.v, as JSON text (the key names the event).
ORDERED = {
    "int_5": "5",
    "real_10_5": "10.5",
    "string_20": '"20"',
    "true": "true",
    "null": "null",
    "big": "99999999999999999999999",
    "neg": "-3",
    "text": '"Hello World"',
    "pct": '"50%_off"',
    "nested": '{"a":1}',
}


def condition(path: str, op: Operator, value: str = "") -> EventFilter:
    return EventFilter(where=((path, parse_operator(op, value)),))


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (">", "5", {"real_10_5", "big"}),  # numbers only: never "20", never true
        (">=", "5", {"int_5", "real_10_5", "big"}),
        ("<", "5", {"neg"}),
        ("<=", "5.0", {"int_5", "neg"}),
        (">", "1e22", {"big"}),  # beyond 64 bits, compared by value
        ("<", "-1e-5000", {"neg"}),  # beyond a double's precision: 0, never an error
        ("~", "WORLD", {"text"}),  # strings only, ASCII letters folded
        ("~", "%", {"pct"}),  # % and _ are themselves, not wildcards
        ("~", "_o", {"pct"}),
        ("~", "5", {"pct"}),  # the number 5 is not text
        ("!=", "5", set(ORDERED) - {"int_5"} | {"missing"}),  # a missing property too
        ("!=", "null", set(ORDERED) - {"null"} | {"missing"}),
        ("!=", '"20"', set(ORDERED) - {"string_20"} | {"missing"}),
        ("*", "", set(ORDERED)),  # present, even as null
    ],
)
def test_where_operators_are_typed(store: OpenStore, op: Operator, value: str, expected: set[str]) -> None:
    rows = [row(n, T0 + n, key=name, data_json=f'{{"v":{v}}}') for n, (name, v) in enumerate(ORDERED.items(), start=1)]
    store.writer.insert([*rows, row(99, T0, key="missing", data={})])
    matching = condition("v", op, value)
    page = store.reader.page(1, 100, where=matching)
    assert ({e.key for e in page.events}, page.total) == (expected, len(expected))
    ((count, _),) = store.reader.bucket_counts([T0], T0 + QUARTER, matching, None)
    assert count == len(expected)


def test_operators_combine_and_erase_exactly_what_they_select(store: OpenStore) -> None:
    store.writer.insert([row(n, T0 + n, data={"n": n, "page": f"/Docs/{n}" if n % 2 else "/home"}) for n in range(20)])
    both = EventFilter(where=(("n", parse_operator(">=", "5")), ("page", parse_operator("~", "docs"))))
    assert store.reader.page(1, 100, where=both).total == 8  # 5, 7, …, 19
    assert store.writer.delete_matching(both, max_rows=100, remember_ids=True) == 8
    assert store.reader.count() == 12
    assert store.reader.page(1, 100, where=condition("n", "<", "5")).total == 5


def test_unique_count_over_a_whole_range(store: OpenStore) -> None:
    users: list[Any] = [1, 1.0, "1", True, None, "a", "a", {"id": 1}]
    store.writer.insert([row(n, T0 + n * MINUTE, data={"user": u}) for n, u in enumerate(users)])
    store.writer.insert([row(50, T0, data={})])
    # 1 and 1.0 are one number, true counts as 1 (as SQL's JSON reading gives it), null and a
    # missing property are not values: 1, "1", "a" and the object.
    assert store.reader.unique_count(EventFilter(), "user") == 4
    assert store.reader.unique_count(EventFilter(since_us=T0 + 5 * MINUTE), "user") == 2
    assert store.reader.unique_count(condition("user", "~", "A"), "user") == 1


def test_funnel_counts_actors_through_the_steps_in_order_within_the_window(store: OpenStore) -> None:
    hour = 60 * MINUTE
    events = [
        ("signup", 0, "u1"), ("activate", 1, "u1"), ("purchase", 2, "u1"),  # all three
        ("signup", 0, "u2"), ("purchase", 1, "u2"), ("activate", 2, "u2"),  # purchase before activating
        ("activate", 0, "u3"), ("signup", 1, "u3"),  # activated before signing up: step 1 only
        ("signup", 0, "u4"), ("activate", 30, "u4"),  # too late for a 24 h window
        ("signup", 40, "u4"), ("activate", 41, "u4"),  # a second start makes it
        ("signup", 0, 1), ("activate", 1, 1.0),  # one actor: the number 1
        ("signup", 0, "1"),  # another: the string "1"
        ("activate", 0, "u5"),  # never signed up
    ]  # fmt: skip
    rows = [row(n, T0 + at * hour, key=key, data={"user": user}) for n, (key, at, user) in enumerate(events, start=1)]
    store.writer.insert([*rows, row(99, T0, key="signup", data={})])  # no actor: not counted
    steps = ["signup", "activate", "purchase"]
    assert store.reader.funnel(EventFilter(), steps, "user", 24 * hour) == [6, 4, 1]
    assert store.reader.funnel(EventFilter(until_us=T0 + 35 * hour), steps, "user", 24 * hour) == [6, 3, 1]
    assert store.reader.funnel(condition("user", "~", "u"), steps, "user", 100 * hour) == [4, 3, 1]


# Unique counts from sketches (issue 14): `--unique-property` declares the properties a store
# may sketch; whatever it does, its answers stay within the error it states.

DAY = 24 * 60 * MINUTE


def sketch_rows(count: int, users: int, first: int = 0, salt: str = "") -> list[StoreRow]:
    """Events 7 s apart over about two days, three keys; a user property for most, none or
    null for some (not counted), and a group that halves the users."""
    rows = []
    for n in range(first, first + count):
        data: dict[str, Any] = {"user": f"u{n % users}{salt}", "group": n % users % 2}
        if n % 97 == 0:
            data = {"group": 3} if n % 2 else {"user": None, "group": 3}
        rows.append(row(n, T0 + n * 7_000_000, key=f"k{n % 3}", data=data))
    return rows


def assert_unique_counts_near_exact(reader: StoreReader, window: EventFilter, path: str) -> int:
    """The store's unique counts (daily, UTC) within 3 of its stated relative standard errors
    of the exact counts; the total it answered."""
    starts = [T0, T0 + DAY]
    got = reader.unique_counts(starts, T0 + 2 * DAY, window, path)
    exact = exact_unique_counts(reader, starts, T0 + 2 * DAY, window, path)
    if got.method == "exact":
        assert got.relative_error is None
        assert got == exact
    else:
        assert got.relative_error is not None and 0 < got.relative_error < 0.05
        for answered, truth in zip([*got.per_bucket, got.total], [*exact.per_bucket, exact.total], strict=True):
            assert abs(answered - truth) <= 3 * got.relative_error * truth + 1, (got, exact)
    return got.total


def test_unique_counts_with_a_declared_property_stay_within_the_stated_error(store_backend: StoreBackend) -> None:
    writer = store_backend.open_writer(unique_properties=("user",))
    reader = store_backend.open_reader()
    writer.insert(sketch_rows(24_000, users=12_000))
    ragged = EventFilter(since_us=T0 + 7 * MINUTE + 13_000_000, until_us=T0 + 46 * 60 * MINUTE + 5_000_000)
    assert reader.unique_counts([T0], T0 + DAY, ragged, "user").method == "hll"
    assert assert_unique_counts_near_exact(reader, ragged, "user") > 11_000
    assert assert_unique_counts_near_exact(reader, replace(ragged, keys=("k1",)), "user") > 3_500
    # Bucket edges everywhere: 5-minute buckets inside one quarter of an hour.
    starts = [T0 + QUARTER + i * 5 * MINUTE for i in range(3)]
    short = reader.unique_counts(starts, T0 + 2 * QUARTER, EventFilter(), "user")
    assert [abs(n - 42) <= 1 for n in short.per_bucket] == [True] * 3  # 300 s / 7 s, less the no-user ones
    # A property not declared, or a property condition: exact.
    assert reader.unique_counts([T0], T0 + DAY, ragged, "group").method == "exact"
    assert reader.unique_counts([T0], T0 + DAY, replace(ragged, where=where(group="1").where), "user").method == "exact"


def test_unique_counts_ignore_duplicates_and_forget_erased_values(store_backend: StoreBackend) -> None:
    writer = store_backend.open_writer(unique_properties=("user",))
    reader = store_backend.open_reader()
    writer.insert(sketch_rows(24_000, users=12_000))
    before = assert_unique_counts_near_exact(reader, EventFilter(), "user")
    # The same ids again with other users: ignored by the insert, and by the counts.
    assert writer.insert(sketch_rows(24_000, users=12_000, salt="-again")) == 0
    assert reader.unique_counts([T0, T0 + DAY], T0 + 2 * DAY, EventFilter(), "user").total == before
    # Erasing half the users halves the count.
    writer.delete_matching(where(group="1"), max_rows=100_000, remember_ids=True)
    after = assert_unique_counts_near_exact(reader, EventFilter(), "user")
    assert abs(after - before / 2) < 0.1 * before
    # Retention of the first day: its sketches go with its events.
    writer.delete_matching(EventFilter(until_us=T0 + DAY), max_rows=100_000, remember_ids=False)
    first_day = reader.unique_counts([T0, T0 + DAY], T0 + 2 * DAY, EventFilter(), "user")
    assert first_day.per_bucket[0] == 0
    assert assert_unique_counts_near_exact(reader, EventFilter(), "user") < after


def test_a_declared_property_is_backfilled_from_the_events_already_stored(store_backend: StoreBackend) -> None:
    writer = store_backend.open_writer()
    reader = store_backend.open_reader()
    writer.insert(sketch_rows(6_000, users=4_000))
    assert reader.unique_counts([T0], T0 + DAY, EventFilter(), "user").method == "exact"
    writer.close()
    writer = store_backend.open_writer(unique_properties=("user",))
    writer.insert(sketch_rows(6_000, users=4_000, first=6_000))  # the backfill runs before it
    assert reader.unique_counts([T0], T0 + DAY, EventFilter(), "user").method == "hll"
    assert_unique_counts_near_exact(reader, EventFilter(), "user")


def test_keys_summary_forgets_the_times_only_erased_events_had(store: OpenStore) -> None:
    # Issue 19, item 12: /keys kept first_seen/last_seen from erased events.
    store.writer.insert([row(n, T0 + n * QUARTER, key="a", data={"user": n % 2}) for n in range(8)])
    store.writer.insert([row(20, T0 - 3 * QUARTER, key="b"), row(21, T0 + 9 * QUARTER, key="b")])
    store.writer.insert([row(30, T0 + 5, key="c", data={"user": 1})])
    erased = store.writer.delete_matching(where(user="1"), max_rows=100, remember_ids=True)
    assert erased == 5
    store.writer.delete_matching(EventFilter(keys=("b",)), max_rows=100, remember_ids=True)
    # a: the events of user 0 (n = 0, 2, 4, 6) remain; b and c are gone.
    assert store.reader.keys_summary() == [("a", 4, T0, T0 + 6 * QUARTER)]
    # The first and the last of them erased: the next ones are first and last seen.
    store.writer.delete_matching(EventFilter(keys=("a",), until_us=T0 + 1), max_rows=100, remember_ids=True)
    store.writer.delete_matching(EventFilter(keys=("a",), since_us=T0 + 6 * QUARTER), max_rows=100, remember_ids=True)
    assert store.reader.keys_summary() == [("a", 2, T0 + 2 * QUARTER, T0 + 4 * QUARTER)]
    # A key seen again after its erasure is first seen then, not when its erased events were.
    # (Received after the erasure: PostgreSQL erases what was received before it, on any node.)
    again = row(40, T0 + 2 * QUARTER, key="b")
    store.writer.insert([(*again[:3], 2**62, again[4])])
    assert ("b", 1, T0 + 2 * QUARTER, T0 + 2 * QUARTER) in store.reader.keys_summary()
    # A retention keeps when a key was first seen (it was, then), as before.
    store.writer.delete_matching(EventFilter(until_us=T0 + 3 * QUARTER), max_rows=100, remember_ids=False)
    assert store.reader.keys_summary() == [("a", 1, T0 + 2 * QUARTER, T0 + 4 * QUARTER)]
