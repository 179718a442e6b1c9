"""The request histogram counted in plain Python (`ingest/request_durations.py`) exposes what
prometheus-client's own Histogram exposed for the same observations, sample for sample."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tlytics.ingest.metrics import Metrics
from tlytics.ingest.request_durations import RequestDurations

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LABELS = st.tuples(
    st.sampled_from(["GET", "POST", "PUT"]),
    st.sampled_from(["/events", "unmatched"]),
    st.sampled_from(["200", "404", "503"]),
)
_SECONDS = st.one_of(st.sampled_from(_BUCKETS), st.floats(min_value=0.0, max_value=20.0, allow_nan=False))


def _without_creation_times(text: bytes) -> str:
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 <time>", text.decode())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_LABELS, _SECONDS), max_size=40))
def test_the_exposition_is_prometheus_clients(observations: list[tuple[tuple[str, str, str], float]]) -> None:
    theirs, ours = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    histogram = Histogram(
        "tlytics_request_duration_seconds",
        "Time to answer a request",
        ["method", "route", "status"],
        buckets=_BUCKETS,
        registry=theirs,
    )
    durations = RequestDurations("tlytics_request_duration_seconds", "Time to answer a request", _BUCKETS, ours)
    for labels, seconds in observations:
        histogram.labels(*labels).observe(seconds)
        durations.observe(durations.series(*labels), seconds)
    assert _without_creation_times(generate_latest(ours)) == _without_creation_times(generate_latest(theirs))


def test_the_name_is_taken_in_its_registry() -> None:
    registry = CollectorRegistry(auto_describe=True)
    RequestDurations("tlytics_request_duration_seconds", "d", _BUCKETS, registry)
    try:
        Histogram("tlytics_request_duration_seconds", "d", registry=registry)
    except ValueError as exc:
        assert "Duplicated timeseries" in str(exc)
    else:
        raise AssertionError("a second histogram of the same name was registered")


def test_a_flood_of_methods_on_one_route_is_one_series() -> None:
    """Unmatched requests with methods of the client's own are counted under `other`: a flood
    of made-up methods cannot grow /metrics, and each request is still counted once."""

    class Unmatched:
        resource = None

    metrics = Metrics()
    for index in range(3000):
        metrics.observe_request(f"M{index % 1500}", Unmatched(), 404, 0.002)  # type: ignore[arg-type]
    text = generate_latest(metrics.registry).decode()
    assert not re.findall(r'method="M\d+"', text)
    counts = re.findall(
        r'tlytics_request_duration_seconds_count\{method="other",route="unmatched",status="404"\} (\S+)', text
    )
    assert counts == ["3000.0"]
