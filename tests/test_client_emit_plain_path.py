"""emit()'s plain path (a str key and a dict, nothing to merge, no hook) refuses exactly what the
general path refuses (issue 18, item 11) and spools the same text: the edges of its shortcuts
(a NaN hidden behind orjson's null, integers beyond 64 bits, keys that are not strings, the
cache of checked keys, nesting counted from the text)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import fast_config
from tlytics import Client, InvalidEvent
from tlytics.client import prepare
from tlytics.client.prepare import loads_exact, prepare_plain
from tlytics.errors import ClientClosed
from tlytics.jsontext import DEPTH_MAX

UNREACHABLE = "http://127.0.0.1:9"


def spooled_data(client: Client) -> list[Any]:
    """The data of every event in the client's spool, decoded exactly, in order."""
    client._buffer.persist()
    return [event["data"] for _, entry in client._spool.peek(1_000) for event in loads_exact(entry)]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        # Each beside a None: orjson writes both as null, so only the walk can tell them apart.
        ({"referrer": None, "values": [1.0, float("nan")]}, r"data\['values'\]\[1\]"),
        ({"referrer": None, "deep": {"a": [{"b": math.inf}]}}, r"data\['deep'\]\['a'\]\[0\]\['b'\]"),
        ({"ratio": -math.inf}, r"data\['ratio'\] is -inf"),
        ({"pair": (None, float("nan"))}, r"data\['pair'\]\[1\]"),
        ({1: "a"}, "key 1"),
        ({"nested": [{"ok": 1}, {2.5: "b"}]}, r"data\['nested'\]\[1\] has the key 2.5"),
        ({"tags": {"a"}}, "set"),
        ({"blob": b"x"}, "bytes"),
    ],
)
def test_plain_path_refuses_what_the_server_would(tmp_path: Path, data: dict[Any, Any], where: str) -> None:
    client = Client(fast_config(UNREACHABLE, tmp_path / "spool"))
    try:
        assert client._plain  # the path under test
        with pytest.raises(InvalidEvent, match=where) as raised:
            client.emit("bad", data)
        assert raised.value.field == "data"
        assert client.pending() == 0
    finally:
        client.close(0.1)


def test_plain_path_spools_big_integers_nulls_and_floats_exactly(tmp_path: Path) -> None:
    client = Client(fast_config(UNREACHABLE, tmp_path / "spool"))
    sent = [
        {"thirty_digits": 123456789012345678901234567890, "negative": -(10**29) - 7},
        {"referrer": None, "duration_ms": 12.5, "list": [None, 0.1, -0.0, 1e308]},
        {"text": "null", "none": None},
    ]
    try:
        for data in sent:
            client.emit("ok", data)
        assert spooled_data(client) == sent
        assert isinstance(spooled_data(client)[0]["thirty_digits"], int)
    finally:
        client.close(0.1)


class Float64(float):
    """A float subclass, as numpy.float64 is: orjson does not take it."""


def test_a_float_subclass_goes_as_a_number_and_its_nan_is_refused(tmp_path: Path) -> None:
    client = Client(fast_config(UNREACHABLE, tmp_path / "spool"))
    try:
        with pytest.raises(InvalidEvent, match=r"data\['score'\] is nan"):
            client.emit("bad", {"score": Float64("nan")})
        with pytest.raises(InvalidEvent, match="inf"):
            client.emit("bad", {"scores": [Float64("-inf")]})
        client.emit("ok", {"score": Float64(0.25)})
        assert spooled_data(client) == [{"score": 0.25}]
    finally:
        client.close(0.1)


def test_nesting_is_counted_not_guessed_from_brackets(tmp_path: Path) -> None:
    deep: Any = 1
    for _ in range(DEPTH_MAX + 1):
        deep = [deep]
    wide = {"lists": [[] for _ in range(DEPTH_MAX * 2)]}  # many brackets, two levels
    client = Client(fast_config(UNREACHABLE, tmp_path / "spool"))
    try:
        with pytest.raises(InvalidEvent, match="nests deeper"):
            client.emit("deep", {"v": deep})
        client.emit("wide", wide)
        assert spooled_data(client) == [wide]
    finally:
        client.close(0.1)


def test_key_cache_never_lets_a_refused_key_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "_KEYS_CHECKED_MAX", 8)
    monkeypatch.setattr(prepare, "_keys_checked", {})
    for round_ in range(3):  # the cache fills and is cleared meanwhile
        for n in range(10):
            assert prepare_plain(f"good_{n}", {}).key == f"good_{n}"
        for bad in ("", " ", "a\nb", "a\u200bb", "x" * 201):
            with pytest.raises(InvalidEvent) as raised:
                prepare_plain(bad, {})
            assert raised.value.field == "key", round_
    assert len(prepare._keys_checked) <= 8


def test_a_str_subclass_key_is_checked_every_time() -> None:
    class Odd(str):
        def __hash__(self) -> int:
            return hash("good")

        def __eq__(self, other: object) -> bool:
            return True

    prepare_plain("good", {})
    with pytest.raises(InvalidEvent):
        prepare_plain(Odd("a\nb"), {})


def test_emit_after_close_raises_on_the_plain_path(tmp_path: Path) -> None:
    client = Client(fast_config(UNREACHABLE, tmp_path / "spool"))
    client.emit("before", {"n": 1})
    client.close(0.1)
    with pytest.raises(ClientClosed):
        client.emit("after", {"n": 2})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()  # NaN and infinities too: both paths must refuse them alike
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_plain_path_matches_the_standard_library_reading_of_json(data: dict[str, Any]) -> None:
    """Refused exactly when strict JSON (no NaN, no Infinity) cannot hold it; else the same
    value back, integers exact."""
    try:
        reference = json.loads(json.dumps(data, allow_nan=False))
    except ValueError:
        reference = None
    try:
        text = prepare_plain("k", data).data_json
    except InvalidEvent as exc:
        assert reference is None, exc
        assert exc.field == "data"
        return
    assert reference is not None, text
    assert loads_exact(text) == reference
