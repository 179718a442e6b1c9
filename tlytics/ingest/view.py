"""GET /view: stored events, newest first, by page or by cursor, optionally filtered; and the
JSON form of a stored event, which /export writes too."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tlytics.ingest.off_loop import run_read
from tlytics.ingest.query import encode_cursor, page_and_size, read_query
from tlytics.ingest.responses import json_response
from tlytics.ingest.state import STORE
from tlytics.store import StoredEvent
from tlytics.timefmt import format_rfc3339_us


def event_json(event: StoredEvent) -> dict[str, Any]:
    """A stored event as the API gives it back."""
    return {
        "id": event.id,
        "key": event.key,
        "timestamp": format_rfc3339_us(event.timestamp_us),
        # Stored JSON goes out as it is, without a decode and re-encode.
        "data": orjson.Fragment(event.data_json),
        "received_at": format_rfc3339_us(event.received_at_us),
    }


async def view(request: web.Request) -> web.Response:
    """GET /view: stored events, newest first, by page or by cursor, optionally filtered."""
    page, page_size = page_and_size(request)
    query = read_query(request)
    store = request.app[STORE]
    result = await run_read(
        request, store.run, store.queries.page, page, page_size, query.where, query.after, query.ascending
    )
    return json_response(
        {
            "events": [event_json(event) for event in result.events],
            "total": result.total,
            "page": page,
            "page_size": page_size,
            "total_pages": -(-result.total // page_size),
            "next_cursor": encode_cursor(result.next_position) if result.next_position else None,
            "order": "asc" if query.ascending else "desc",
        }
    )
