"""Funnels against a brute-force count (hypothesis, both stores), and GET /funnel on a real
server (both stores): steps in order, within the window, distinct actors, typed filters."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.store_backends import BACKENDS, StoreBackend
from tlytics.store import EventFilter, StoreReader, StoreWriter

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z, µs
KEYS = ["a", "b", "c"]
ACTORS: list[Any] = [1, 2, "1", "x", True, None]  # True counts as 1 (the SQL reading of JSON)


@pytest.fixture(params=sorted(BACKENDS))
def opened(request: pytest.FixtureRequest) -> Iterator[tuple[StoreWriter, StoreReader]]:
    backend: StoreBackend = BACKENDS[request.param](request)
    yield backend.open_writer(), backend.open_reader()
    backend.close()


def actor_of(value: Any) -> Any:
    """Who an event's actor is, as the stores tell actors apart."""
    return 1 if value is True else value


def brute_force(events: list[tuple[str, int, Any]], steps: list[str], within: int) -> list[int]:
    """Per step, the actors with some chain of events: the steps' keys in order, each strictly
    later than the one before, the last within `within` of the first. Every chain is tried."""
    by_actor: dict[Any, list[tuple[str, int]]] = {}
    for key, ts, user in events:
        if user is not None:
            by_actor.setdefault(actor_of(user), []).append((key, ts))
    reached = [0] * len(steps)
    for timeline in by_actor.values():
        for depth in range(1, len(steps) + 1):
            if any(
                [key for key, _ in chain] == steps[:depth]
                and all(a[1] < b[1] for a, b in itertools.pairwise(chain))
                and chain[-1][1] - chain[0][1] <= within
                for chain in itertools.permutations(timeline, depth)
            ):
                reached[depth - 1] += 1
    return reached


EVENTS = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(min_value=0, max_value=12), st.sampled_from(ACTORS)), max_size=14
)
STEPS = st.lists(st.sampled_from(KEYS), min_size=1, max_size=4)
_examples = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, steps=STEPS, within=st.integers(min_value=0, max_value=12))
def test_funnel_agrees_with_a_brute_force_count(
    opened: tuple[StoreWriter, StoreReader], events: list[tuple[str, int, Any]], steps: list[str], within: int
) -> None:
    writer, reader = opened
    # Each example's keys are its own, so earlier examples' events never count.
    prefix = f"e{next(_examples)}-"
    writer.insert(
        [
            (uuid.uuid4().bytes, prefix + key, T0 + ts, T0, orjson.dumps({"u": user}).decode())
            for key, ts, user in events
        ]
    )
    counted = reader.funnel(EventFilter(), [prefix + step for step in steps], "u", within)
    assert counted == brute_force(events, steps, within)
