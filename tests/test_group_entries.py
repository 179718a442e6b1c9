"""One spool entry per group commit: the requests one transaction wrote are one spool row (a
JSON array of their entries, each with its own received_at). The writer stores each request
with its own received_at, reads a spool written before (one request per row) the same way,
sets aside only the unreadable requests of a group, and tlytics-replay reads both kinds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import given
from msgspec import Raw

from tlytics.errors import SpoolFull
from tlytics.replay_read import Progress, Summary, read_spools
from tlytics.spool import GroupCommitter, Spool
from tlytics.spool.entry import (
    decode_spool_entry,
    decode_spool_requests,
    encode_spool_entry,
    group_spool_entries,
    spool_entry_parts,
    store_rows,
)
from tlytics.store import SQLiteWriter
from tlytics.writer import WriterResources, drain_batch
from tlytics.writer.drain import DrainResult


def request_entry(received_at: int, *events: tuple[int, str]) -> bytes:
    """A request's spool entry: events as (id byte, data JSON text)."""
    return encode_spool_entry(received_at, [((bytes([n]) * 16).hex(), "k", 1_000 + n, Raw(data)) for n, data in events])


def stored(store: SQLiteWriter) -> list[tuple[str, int, str]]:
    rows = store._write_connection.execute("SELECT hex(id), received_at, data FROM events ORDER BY ts, id")
    return [(id_hex.lower(), received_at, data) for id_hex, received_at, data in rows.fetchall()]


def drain(
    tmp_path: Path, open_spool: Callable[[Path], Spool], values: list[bytes]
) -> tuple[SQLiteWriter, Spool, DrainResult]:
    spool = open_spool(tmp_path / "spool")
    quarantine = open_spool(tmp_path / "quarantine")
    store = SQLiteWriter(tmp_path / "store.db")
    spool.append_many(values)
    result = drain_batch(WriterResources(spool, quarantine, lambda: store), 1000, 20_000)
    assert spool.count() == 0
    return store, quarantine, result


async def test_a_group_commit_is_one_spool_entry_and_each_request_keeps_its_received_at(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    spool = open_spool(tmp_path / "spool")
    committer = GroupCommitter(spool)
    committer.start()
    requests = [request_entry(100 + n, (n, f'{{"n":{n}}}')) for n in range(1, 41)]
    await asyncio.gather(*(committer.append(entry, 1) for entry in requests))
    await committer.close()
    assert spool.count() < len(requests) // 4, "concurrent requests should share spool entries"
    held = [part for _key, value in spool.peek(100) for part in spool_entry_parts(value)]
    assert held == requests  # in order of arrival, byte for byte
    quarantine = open_spool(tmp_path / "quarantine")
    store = SQLiteWriter(tmp_path / "store.db")
    result = drain_batch(WriterResources(spool, quarantine, lambda: store), 1000, 20_000)
    assert (result.events, result.inserted, result.quarantined, spool.count()) == (40, 40, 0, 0)
    assert stored(store) == [((bytes([n]) * 16).hex(), 100 + n, f'{{"n":{n}}}') for n in range(1, 41)]


def test_a_spool_written_before_group_entries_still_drains(tmp_path: Path, open_spool: Callable[[Path], Spool]) -> None:
    # The previous version wrote one request per spool row; a new one appends groups after them.
    old = [request_entry(1, (1, "1")), request_entry(2, (2, "2"), (3, "3"))]
    new = group_spool_entries([request_entry(4, (4, "4")), request_entry(5, (5, "5"))])
    store, quarantine, result = drain(tmp_path, open_spool, [*old, *new])
    assert stored(store) == [((bytes([n]) * 16).hex(), {3: 2}.get(n, n), str(n)) for n in range(1, 6)]
    assert (result.entries, result.inserted, quarantine.count()) == (3, 5, 0)


def test_an_unreadable_request_of_a_group_is_set_aside_alone(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    good = request_entry(1, (1, "{}"))
    not_utf8 = request_entry(2, (2, '"x"')).replace(b'"x"', b'"\xff"')
    later = request_entry(3, (3, "[1]"))
    [group] = group_spool_entries([good, not_utf8, later])
    store, quarantine, result = drain(tmp_path, open_spool, [group])
    assert stored(store) == [("01" * 16, 1, "{}"), ("03" * 16, 3, "[1]")]
    # The quarantine holds that request's entry as it was: a request's entry, replayable.
    assert [value for _key, value in quarantine.peek(10)] == [not_utf8]
    assert (result.entries, result.quarantined) == (1, 1)


def test_an_id_sqlite_cannot_read_sets_aside_its_request_alone(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    good = request_entry(1, (1, "{}"))
    bad_hex = encode_spool_entry(2, [("zz" * 16, "k", 2, Raw(b"{}"))])
    [group] = group_spool_entries([good, bad_hex])
    store, quarantine, _result = drain(tmp_path, open_spool, [group])
    assert stored(store) == [("01" * 16, 1, "{}")]
    assert [value for _key, value in quarantine.peek(10)] == [bad_hex]
    assert decode_spool_entry(bad_hex)[0] == 2


def test_a_store_that_fails_leaves_the_group_and_quarantines_nothing_yet(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    class Failing(SQLiteWriter):
        fail = True

        def insert(self, rows: Any) -> int:
            if self.fail:
                raise RuntimeError("store down")
            return super().insert(rows)

    store = Failing(tmp_path / "store.db")
    spool, quarantine = open_spool(tmp_path / "spool"), open_spool(tmp_path / "quarantine")
    not_utf8 = request_entry(2, (2, '"x"')).replace(b'"x"', b'"\xff"')
    spool.append_many(group_spool_entries([request_entry(1, (1, "{}")), not_utf8]))
    resources = WriterResources(spool, quarantine, lambda: store)
    for _attempt in range(3):
        try:
            drain_batch(resources, 1000, 20_000)
        except RuntimeError:
            pass
    assert (spool.count(), quarantine.count()) == (1, 0)
    store.fail = False
    drain_batch(resources, 1000, 20_000)
    assert (spool.count(), quarantine.count()) == (0, 1)
    assert stored(store) == [("01" * 16, 1, "{}")]


async def test_a_full_spool_refuses_the_whole_group_and_stores_none_of_it(
    tmp_path: Path, open_spool: Callable[[Path], Spool]
) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1)  # full from the start: SQLite's own pages
    try:
        committer = GroupCommitter(spool)
        committer.start()
        answers = await asyncio.gather(
            *(committer.append(request_entry(n, (n, "{}")), 1) for n in range(2, 10)), return_exceptions=True
        )
        await committer.close()
        assert all(isinstance(answer, SpoolFull) for answer in answers), answers
        assert spool.count() == 0
    finally:
        spool.close()


def test_tlytics_replay_reads_group_entries_and_old_ones(tmp_path: Path, open_spool: Callable[[Path], Spool]) -> None:
    spool = open_spool(tmp_path / "spool")
    spool.append_many(
        [
            request_entry(1, (1, '{"a":1}')),
            *group_spool_entries([request_entry(2, (2, "2")), request_entry(3, (3, "3"), (4, "4"))]),
        ]
    )
    spool.close()
    summary = Summary()
    found = list(read_spools([tmp_path / "spool"], summary, Progress()))
    assert [event.event["id"].replace("-", "") for event in found] == [(bytes([n]) * 16).hex() for n in range(1, 5)]
    assert [event.event["data"] for event in found] == [{"a": 1}, 2, 3, 4]
    assert summary.invalid == 0


def test_a_group_past_its_size_is_cut_into_several_entries() -> None:
    requests = [request_entry(n, (n, '"' + "x" * 100 + '"')) for n in range(1, 11)]
    values = group_spool_entries(requests, max_bytes=3 * len(requests[0]) + 3)
    assert len(values) == 4
    assert all(len(value) <= 3 * len(requests[0]) + 5 for value in values)
    assert [part for value in values for part in spool_entry_parts(value)] == requests
    assert group_spool_entries([requests[0]]) == [requests[0]]  # a lone request: its entry as it is


_EVENTS = st.lists(
    st.tuples(
        st.binary(min_size=16, max_size=16).map(bytes.hex),
        st.text(min_size=1, max_size=5),
        st.integers(-(2**50), 2**50),
        st.sampled_from(["{}", "[1,2]", '"é"', "1E2", '{"a":[null,true]}']),
    ),
    max_size=4,
)


@given(st.lists(st.tuples(st.integers(0, 2**52), _EVENTS), min_size=1, max_size=6), st.integers(1, 2_000))
def test_a_group_entry_reads_as_its_requests_entries(requests: list[Any], max_bytes: int) -> None:
    entries = [
        encode_spool_entry(received_at, [(i, k, t, Raw(data)) for i, k, t, data in events])
        for received_at, events in requests
    ]
    values = group_spool_entries(entries, max_bytes=max_bytes)
    read = [request for value in values for request in decode_spool_requests(value)]
    assert [(received_at, [(*event[:3], bytes(event[3])) for event in events]) for received_at, events in read] == [
        (received_at, [(i, k, t, data.encode()) for i, k, t, data in events]) for received_at, events in requests
    ]
    assert [row for value in values for row in store_rows(value)] == [
        row for entry in entries for row in store_rows(entry)
    ]
