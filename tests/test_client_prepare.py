"""What emit() accepts (issue 18, item 11): data the server would refuse or change is refused
at emit() with InvalidEvent, instead of an id returned for an event dropped in the background
or sent as its Python repr; integers of any size go out exactly. And the event's other ways
in: emit keywords, context, capture mode."""

from __future__ import annotations

import asyncio
import re
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import ServerProcess, fast_config
from tests.shared_server import StoredSince
from tlytics import Client, Config, Event, InvalidEvent
from tlytics.client.prepare import Prepared, encode_data, loads_exact, prepare_event
from tlytics.testing import capturing_client


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({1: "a"}, "key 1"),
        ({"nested": {("a", "b"): 1}}, re.escape("data['nested'] has the key ('a', 'b')")),
        ({"values": [1.0, float("nan")]}, r"data\['values'\]\[1\]"),
        ({"x": float("inf")}, "NaN and Infinity"),
        ({"tags": {"a", "b"}}, "set"),
        ({"tags": frozenset()}, "frozenset"),
        ({"blob": b"\x00\x01"}, "bytes"),
        ({"blob": bytearray(b"x")}, "bytearray"),
        ({"price": Decimal("NaN")}, "NaN"),
        ({"huge": 10**5000}, "digits"),
    ],
)
def test_emit_refuses_data_the_server_would_refuse_or_change(tmp_path: Path, data: Any, where: str) -> None:
    client = Client(fast_config("http://127.0.0.1:9", tmp_path / "spool"))
    try:
        with pytest.raises(InvalidEvent, match=where) as raised:
            client.emit("bad", data)
        assert raised.value.field == "data"
        with pytest.raises(InvalidEvent):
            client.emit_and_send("bad", data)
        assert client.pending() == 0
    finally:
        client.close(0.1)


def test_big_integers_and_decimals_are_stored_exactly(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    server = shared_server
    data = {"big": 2**100, "negative": -(10**40), "small": 7, "nested": [{"n": 3**90}], "price": Decimal("12.50")}
    with Client(fast_config(server.url, tmp_path / "spool")) as client:
        emitted = client.emit("numbers", data)
        sent = client.emit_and_send("numbers", {"big": 2**64})
        assert client.flush(timeout=30) is True
    server.wait_drained()
    stored = {event["id"]: event["data"] for event in stored_since.events()}
    assert stored[emitted] == {**data, "price": "12.50"}  # a Decimal goes as its text
    assert stored[sent] == {"big": 2**64}


unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))  # no lone surrogates
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**60), max_value=10**60)  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | unicode_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(unicode_text, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(unicode_text, json_values, max_size=5))
def test_data_round_trips_through_its_encoding_exactly(data: dict[str, Any]) -> None:
    assert loads_exact(encode_data(data)) == data


def test_emit_takes_timestamp_and_id_keywords_and_still_takes_an_event() -> None:
    with capturing_client() as client:
        given_id = "0190a5d6-0000-7000-8000-000000000001"
        assert client.emit("a", {"x": 1}, timestamp="2025-01-02T03:04:05Z", id=given_id) == given_id
        client.emit(Event(key="b", data={"y": 2}, timestamp="2025-01-02T03:04:06Z"))
        with pytest.raises(TypeError):
            client.emit(Event(key="c"), {"z": 3})
    first, second = client.captured
    assert (first.key, first.id, first.timestamp, first.data) == ("a", given_id, "2025-01-02T03:04:05Z", {"x": 1})
    assert (second.key, second.data, second.timestamp) == ("b", {"y": 2}, "2025-01-02T03:04:06Z")


def test_capture_mode_validates_and_records_without_disk_or_threads(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    threads_before = threading.active_count()
    client = Client(Config(capture=True, spool_dir=spool, default_data={"service": "web"}))
    client.emit("signup", {"plan": "pro"})
    with pytest.raises(InvalidEvent):
        client.emit("signup", {"tags": {"a"}})
    assert [(e.key, e.data) for e in client.captured] == [("signup", {"service": "web", "plan": "pro"})]
    assert client.flush() is True and client.close() is True
    assert not spool.exists() and threading.active_count() == threads_before


def test_context_data_is_merged_per_thread_and_per_asyncio_task() -> None:
    with capturing_client(default_data={"service": "web", "user": "none"}) as client:
        with client.context(user="u1", request="r1"):
            client.emit("in_block", {"request": "own"})
            with client.context(step=2):
                client.emit("nested")
        client.emit("outside")

        def request_thread(user: str) -> None:
            client.context_data(user=user)
            client.emit("thread", {"n": user})

        threads = [threading.Thread(target=request_thread, args=(f"t{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        async def handler(user: str) -> None:
            client.context_data(user=user)
            await asyncio.sleep(0)
            client.emit("task", {"n": user})

        async def serve() -> None:
            await asyncio.gather(*(handler(f"a{n}") for n in range(3)))

        asyncio.run(serve())
        client.emit("after")
    data = [(e.key, e.data) for e in client.captured]
    assert data[:3] == [
        ("in_block", {"service": "web", "user": "u1", "request": "own"}),
        ("nested", {"service": "web", "user": "u1", "request": "r1", "step": 2}),
        ("outside", {"service": "web", "user": "none"}),
    ]
    for key in ("thread", "task"):
        events = [d for k, d in data if k == key]
        assert len(events) == 3 and all(d["user"] == d["n"] for d in events)
    assert data[-1] == ("after", {"service": "web", "user": "none"})


def test_prepare_event_is_pure_and_shared() -> None:
    prepared = prepare_event("k", {"a": [1, 2]}, event_id="0190A5D6-0000-7000-8000-000000000001")
    assert isinstance(prepared, Prepared)
    assert prepared.id == "0190a5d6-0000-7000-8000-000000000001" and prepared.data_json == b'{"a":[1,2]}'
