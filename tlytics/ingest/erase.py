"""DELETE /events: erase the matching events for good, through the writer (which drains the
spool first, so nothing acknowledged earlier slips in afterwards). The request's log line says
what kind of filter erased how many events, never the filter's values (often personal data)."""

from __future__ import annotations

import structlog
from aiohttp import web

from tlytics.ingest.query import read_query
from tlytics.ingest.responses import ApiError, json_response
from tlytics.ingest.state import WRITE_SCHEDULER
from tlytics.writer import ErasureIncomplete


async def erase_events(request: web.Request) -> web.Response:
    """DELETE /events?where=data.user_id:123: erase matching events for good."""
    query = read_query(request)
    if query.where.is_empty:
        raise ApiError(
            400,
            "say which events to erase: where=data.<property>:<value>, key, since or until",
            field="where",
        )
    # The audit fields name the kind of filter, not its values; bound before the erasure so an
    # incomplete one (a 503, mapped in error_answers) is logged with them too.
    structlog.contextvars.bind_contextvars(
        where_properties=[path for path, _ in query.where.where],
        keys=len(query.where.keys),
        since=query.where.since_us is not None,
        until=query.where.until_us is not None,
    )
    try:
        deleted = await request.app[WRITE_SCHEDULER].erase(query.where)
    except ErasureIncomplete as exc:
        structlog.contextvars.bind_contextvars(events_deleted=exc.deleted)
        raise
    structlog.contextvars.bind_contextvars(events_deleted=deleted)
    return json_response({"deleted": deleted})
