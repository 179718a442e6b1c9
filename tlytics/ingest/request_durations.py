"""The request duration histogram (`tlytics_request_duration_seconds`), counted in plain Python
and handed to prometheus-client only when `/metrics` is scraped.

prometheus-client's `Histogram.observe` is five Python calls and two locks (the sum and the
bucket, each its own value under its own lock): a share of a 1-event post's own work (issue 22)
for a figure read once every few seconds. Here an observation is a bisect and two additions on
the event loop's thread, the only one that observes; a scrape (on another thread) reads each
series' counts as they are, as prometheus-client's own histogram does (one bucket at a time).
The exposition is the same, sample for sample: the buckets, `_count`, `_sum` and `_created` of
each series in the order the series first appeared.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from prometheus_client import CollectorRegistry, Metric
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# How prometheus-client writes a bucket's bound (`le`): "0.001", "1.0", "+Inf" (untyped there).
_go_float = cast(Callable[[float], str], floatToGoString)


class DurationSeries:
    """One (method, route, status) series: its count per bucket (not cumulative) and its sum."""

    __slots__ = ("counts", "created", "labels", "total")

    def __init__(self, labels: dict[str, str], buckets: int) -> None:
        self.labels = labels
        self.counts = [0.0] * buckets
        self.total = 0.0
        self.created = time.time()


class RequestDurations(Collector):
    """A histogram labelled by method, route and status, registered in `registry`."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        # As prometheus-client does: the bounds as floats, +Inf last.
        self.bounds = [float(bound) for bound in buckets]
        if self.bounds[-1] != math.inf:
            self.bounds.append(math.inf)
        self._le = [_go_float(bound) for bound in self.bounds]
        self._series: dict[tuple[str, str, str], DurationSeries] = {}
        registry.register(self)

    def series(self, method: str, route: str, status: str) -> DurationSeries:
        """The series of these labels, created at its first observation."""
        key = (method, route, status)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = DurationSeries(
                {"method": method, "route": route, "status": status}, len(self.bounds)
            )
        return found

    def observe(self, series: DurationSeries, seconds: float) -> None:
        """Count `seconds` (the caller inlines this on its hot path: see Metrics.observe_request)."""
        series.counts[bisect.bisect_left(self.bounds, seconds)] += 1.0
        series.total += seconds

    def describe(self) -> Iterable[Metric]:
        return [Metric(self._name, self._documentation, "histogram")]

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self._name, self._documentation, "histogram")
        name = self._name
        # list() copies the values in one C call, under the GIL: the loop may add a series meanwhile.
        for series in list(self._series.values()):
            counts = list(series.counts)
            cumulative = 0.0
            for le, count in zip(self._le, counts, strict=True):
                cumulative += count
                metric.add_sample(name + "_bucket", {**series.labels, "le": le}, cumulative)
            metric.add_sample(name + "_count", dict(series.labels), cumulative)
            metric.add_sample(name + "_sum", dict(series.labels), series.total)
            if prometheus_metrics._use_created:
                metric.add_sample(name + "_created", dict(series.labels), series.created)
        return [metric]
