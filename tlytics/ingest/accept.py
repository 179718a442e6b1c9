"""POST /events and POST /batch: parse → validate → spool → answer. The rules live in
`tlytics.ingest.validation` (and `tlytics.events` behind it), durability in the spool: the 200 goes
out only once the group committer has the request's entry on disk."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

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
    accept = app[ACCEPT]
    entry, count = _fast_spool_entry(accept, body, batch=batch) or await _reference_spool_entry(
        app, accept, body, batch=batch
    )
    if count:
        await accept.committer.append(entry, count)
    _count_accepted(accept, count)
    return count


def _fast_spool_entry(accept: AcceptPath, body: bytes, *, batch: bool) -> tuple[bytes, int] | None:
    """The body's spool entry by the fast path, on the loop, for a small body (most posts: no
    coroutine of its own to go through); None when it is not small or not proven that way.
    InvalidRequest (400/413) propagates, as SpoolError (503) does from the commit: error_answers
    maps them."""
    if len(body) > INLINE_BODY_BYTES:
        return None
    settings = accept.settings
    return fast_spool_entry(
        body,
        batch=batch,
        now_us=time.time_ns() // 1000,
        max_events=settings.max_events_per_request,
        max_event_bytes=settings.max_event_bytes,
    )


def _count_accepted(accept: AcceptPath, count: int) -> None:
    """A post's events were committed (or it had none). METRICS' events_accepted is counted by
    the group commit (app._committer_ctx)."""
    counters = accept.counters
    counters.accepted_requests += 1
    counters.accepted_events += count
    request_line.bind("events_accepted", count)  # for the request's canonical line


async def _reference_spool_entry(
    app: web.Application, accept: AcceptPath, body: bytes, *, batch: bool
) -> tuple[bytes, int]:
    """The body's spool entry by the reference rules (what the fast path could not prove), on
    the loop only when that is surely cheap (a tiny body), else on a body thread."""
    settings = accept.settings
    now_us = time.time_ns() // 1000
    max_events, max_event_bytes = settings.max_events_per_request, settings.max_event_bytes
    if len(body) <= INLINE_REFERENCE_BYTES:
        return reference_spool_entry(
            body, batch=batch, now_us=now_us, max_events=max_events, max_event_bytes=max_event_bytes
        )
    return await app[BODY_WORKERS].run(
        spool_entry, body, batch=batch, now_us=now_us, max_events=max_events, max_event_bytes=max_event_bytes
    )


def _post_handler(*, batch: bool, doc: str, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of POST /events (`batch` False) or /batch. It spells out `spool_body`
    rather than call it: a handler's frames are each resumed once more when its group
    commits, so each frame fewer on this path counts (issue 22)."""

    async def post(request: web.Request) -> web.Response:
        app = request.app
        accept = app[ACCEPT]
        body = await read_body(request, settings=accept.settings)
        entry, count = _fast_spool_entry(accept, body, batch=batch) or await _reference_spool_entry(
            app, accept, body, batch=batch
        )
        if count:
            await accept.committer.append(entry, count)
        _count_accepted(accept, count)
        return accepted_response(count)

    post.__doc__ = doc
    post.__name__ = post.__qualname__ = name
    return post


post_events = _post_handler(batch=False, doc="POST /events: a JSON array of events.", name="post_events")
post_batch = _post_handler(batch=True, doc='POST /batch: {"events": [...]}.', name="post_batch")
