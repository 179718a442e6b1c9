"""POST /events and POST /batch: parse → validate → spool → answer. The rules live in
`tlytics.ingest.validation` (and `tlytics.events` behind it), durability in the spool: the 200 goes
out only once the group committer has the request's entry on disk."""

from __future__ import annotations

import time

from aiohttp import web

import tlytics.ingest.request_line as request_line
from tlytics.ingest.bodies import read_body
from tlytics.ingest.body_work import BODY_WORKERS, INLINE_BODY_BYTES, INLINE_REFERENCE_BYTES
from tlytics.ingest.fastpath import fast_spool_entry
from tlytics.ingest.responses import accepted_response
from tlytics.ingest.state import ACCEPT, AcceptPath
from tlytics.ingest.validation import reference_spool_entry, spool_entry


async def spool_body(request: web.Request, body: bytes, *, batch: bool) -> int:
    """Validate a body of Tlytics events (`/events` or `/batch` shape), spool it and return its
    event count once committed: the one accept path (the Segment and PostHog routes translate
    their bodies to a `/batch` body and come here)."""
    app = request.app
    return await _spool(app, app[ACCEPT], body, batch=batch)


async def _spool(app: web.Application, accept: AcceptPath, body: bytes, *, batch: bool) -> int:
    settings = accept.settings
    now_us = time.time_ns() // 1000
    max_events, max_event_bytes = settings.max_events_per_request, settings.max_event_bytes
    # InvalidRequest (400/413) and SpoolError (503) propagate: error_answers maps them.
    # The fast path on a small body, on the loop (most posts: no other coroutine to go through).
    accepted = None
    if len(body) <= INLINE_BODY_BYTES:
        accepted = fast_spool_entry(
            body, batch=batch, now_us=now_us, max_events=max_events, max_event_bytes=max_event_bytes
        )
    if accepted is None:
        accepted = await _reference_spool_entry(
            app, body, batch=batch, now_us=now_us, max_events=max_events, max_event_bytes=max_event_bytes
        )
    entry, count = accepted
    if count:
        await accept.committer.append(entry, count)
    # METRICS' events_accepted is counted by the group commit (app._committer_ctx).
    counters = accept.counters
    counters.accepted_requests += 1
    counters.accepted_events += count
    request_line.bind("events_accepted", count)  # for the request's canonical line
    return count


async def _reference_spool_entry(
    app: web.Application, body: bytes, *, batch: bool, now_us: int, max_events: int, max_event_bytes: int
) -> tuple[bytes, int]:
    """The body's spool entry by the reference rules (what the fast path could not prove), on
    the loop only when that is surely cheap (a tiny body), else on a body thread."""
    if len(body) <= INLINE_REFERENCE_BYTES:
        return reference_spool_entry(
            body, batch=batch, now_us=now_us, max_events=max_events, max_event_bytes=max_event_bytes
        )
    return await app[BODY_WORKERS].run(
        spool_entry, body, batch=batch, now_us=now_us, max_events=max_events, max_event_bytes=max_event_bytes
    )


async def post_events(request: web.Request) -> web.Response:
    """POST /events: a JSON array of events."""
    app = request.app
    accept = app[ACCEPT]
    body = await read_body(request, settings=accept.settings)
    return accepted_response(await _spool(app, accept, body, batch=False))


async def post_batch(request: web.Request) -> web.Response:
    """POST /batch: {"events": [...]}."""
    app = request.app
    accept = app[ACCEPT]
    body = await read_body(request, settings=accept.settings)
    return accepted_response(await _spool(app, accept, body, batch=True))
