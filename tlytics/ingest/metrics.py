"""Prometheus metrics (`GET /metrics`) with prometheus-client, in a registry per application
(no process globals, so several apps in one process, as in tests, do not mix their figures)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REJECTION_REASONS = {
    400: "invalid",
    401: "unauthorized",
    408: "body_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


# Distinct (method, route, status) children kept by Metrics.observe_request.
_REQUEST_CHILDREN_MAX = 1024


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
        self.request_seconds = Histogram(
            "tlytics_request_duration_seconds",
            "Time to answer a request",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self._request_children: dict[tuple[str, str, int], Histogram] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request in `request_seconds`.

        prometheus-client's labels() validates and looks its labels up under a lock on every
        call (~4 us, a twentieth of a 1-event request); the child for each (method, route,
        status) is kept here instead. The methods come from clients: past a bound, labels()
        again, so the cache cannot grow without limit.
        """
        labels = (method, route, status)
        child = self._request_children.get(labels)
        if child is None:
            child = self.request_seconds.labels(method, route, str(status))
            if len(self._request_children) < _REQUEST_CHILDREN_MAX:
                self._request_children[labels] = child
        child.observe(seconds)

    def rejected(self, status: int) -> None:
        self.requests_rejected.labels(REJECTION_REASONS.get(status, "other")).inc()
