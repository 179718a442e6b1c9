"""The request histogram keeps its series per (method, route, status) apart now that the
metrics keep each series' child instead of looking it up per request."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.helpers import app_flush


async def test_request_durations_are_counted_per_method_route_and_status(client: Any) -> None:
    for _ in range(3):
        assert (await client.post("/events", json=[{"key": "a"}])).status == 200
    assert (await client.post("/events", json=[{"key": ""}])).status == 400
    assert (await client.get("/nowhere")).status == 404
    text = await (await client.get("/metrics")).text()
    counts = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("tlytics_request_duration_seconds_count")
    }
    assert counts['tlytics_request_duration_seconds_count{method="POST",route="/events",status="200"}'] == 3
    assert counts['tlytics_request_duration_seconds_count{method="POST",route="/events",status="400"}'] == 1
    assert counts['tlytics_request_duration_seconds_count{method="GET",route="unmatched",status="404"}'] == 1


async def test_metrics_count_what_happened(client: Any, app: web.Application) -> None:
    await client.post("/events", json=[{"key": "a", "id": "0190f7c4-1234-7abc-8def-0123456789ab"}] * 3)
    await client.post("/events", json=[{"key": ""}])
    await client.post("/events", data=b"x", headers={"Content-Type": "text/plain"})
    await app_flush(app)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")
    }
    assert figures["tlytics_events_accepted_total"] == 3
    assert figures["tlytics_events_stored_total"] == 1
    assert figures["tlytics_duplicates_ignored_total"] == 2
    assert figures['tlytics_requests_rejected_total{reason="invalid"}'] == 1
    assert figures['tlytics_requests_rejected_total{reason="unsupported_media_type"}'] == 1
    assert figures["tlytics_spool_entries"] == 0
    assert figures["tlytics_writer_batches_total"] >= 1
    assert any(k.startswith("tlytics_request_duration_seconds_bucket") for k in figures)
