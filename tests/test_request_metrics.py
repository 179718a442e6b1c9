"""The request histogram keeps its series per (method, route, status) apart now that the
metrics keep each series' child instead of looking it up per request."""

from __future__ import annotations

from typing import Any


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
