"""Prometheus metrics (`GET /metrics`) with prometheus-client, in a registry per application
(no process globals, so several apps in one process, as in tests, do not mix their figures)."""

from __future__ import annotations

from bisect import bisect_left

from aiohttp.web_urldispatcher import AbstractRoute
from prometheus_client import CollectorRegistry, Counter, Gauge

from tlytics.ingest.request_durations import DurationSeries, RequestDurations

REJECTION_REASONS = {
    400: "invalid",
    401: "unauthorized",
    408: "body_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


# The methods an unmatched request is labelled by; any other is "other".
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
# Distinct (method, route, status) series kept by Metrics.observe_request.
_REQUEST_SERIES_MAX = 1024


class Metrics:
    """Every figure the server exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.events_accepted = Counter(
            "tlytics_events_accepted", "Events acknowledged (committed to the spool)", registry=registry
        )
        self.requests_rejected = Counter(
            "tlytics_requests_rejected", "Ingest requests refused, by reason", ["reason"], registry=registry
        )
        self.events_stored = Counter("tlytics_events_stored", "Events inserted into the store", registry=registry)
        self.duplicates_ignored = Counter(
            "tlytics_duplicates_ignored", "Events not inserted because their id was already stored", registry=registry
        )
        self.writer_batches = Counter("tlytics_writer_batches", "Store transactions written", registry=registry)
        self.writer_failures = Counter(
            "tlytics_writer_failures", "WriteScheduler batches that failed (retried)", registry=registry
        )
        self.spool_entries = Gauge(
            "tlytics_spool_entries", "Spool entries waiting: one per group commit of requests", registry=registry
        )
        self.spool_bytes = Gauge("tlytics_spool_bytes", "Size of the spool on disk", registry=registry)
        self.quarantined_entries = Gauge(
            "tlytics_quarantined_entries", "Unreadable spool entries set aside (need an operator)", registry=registry
        )
        self.quarantine_bytes = Gauge("tlytics_quarantine_bytes", "Size of the quarantine on disk", registry=registry)
        self.writer_lag_seconds = Gauge(
            "tlytics_writer_lag_seconds", "Age of the oldest spooled request", registry=registry
        )
        self.request_seconds = RequestDurations(
            "tlytics_request_duration_seconds",
            "Time to answer a request",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self._bounds = self.request_seconds.bounds
        # The series of each matched route by (method, route object, status): no label text to
        # build per request. Unmatched requests are looked up by their label ("unmatched").
        self._request_series: dict[tuple[str, object, int], DurationSeries] = {}

    def observe_request(self, method: str, route: AbstractRoute, status: int, seconds: float) -> None:
        """Count one answered request in `request_seconds`, under its route's canonical path
        (`unmatched` when no route matched, with a method outside the standard ones labelled
        `other`). Past a bound, series are looked up by their labels instead of kept here, so
        neither this nor request_seconds can grow without limit."""
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            resource = route.resource
            if resource is None and method not in _KNOWN_METHODS:
                # The method is the client's own word (any token reaches an unmatched route):
                # one series per word would let a client grow /metrics without limit.
                method = "other"
            series = self.request_seconds.series(
                method, resource.canonical if resource is not None else "unmatched", str(status)
            )
            # An unmatched request's route is made for it (aiohttp's SystemRoute): not a key.
            if resource is not None and len(self._request_series) < _REQUEST_SERIES_MAX:
                self._request_series[key] = series
        # RequestDurations.observe, inlined: this runs for every request.
        series.counts[bisect_left(self._bounds, seconds)] += 1.0
        series.total += seconds

    def rejected(self, status: int) -> None:
        self.requests_rejected.labels(REJECTION_REASONS.get(status, "other")).inc()
