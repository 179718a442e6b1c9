"""HTTP handlers: parse → validate → spool → answer. Each is short on purpose; the rules live
in `tlytics.events`, durability in the spool and the writer."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
from importlib import resources
from pathlib import Path
import time
import uuid
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tlytics import __version__
from tlytics.errors import InvalidEvent, SpoolError, SpoolFull, StoreError
from tlytics.events import normalize_events
from tlytics.ingest.codec import fast_spool_entry
from tlytics.ingest.query import encode_cursor, read_query
from tlytics.ingest.keys import COMMITTER, COUNTERS, METRICS, EVENTS_ACCEPTED, READER, SETTINGS, SPOOL, STORE, WRITER
from tlytics.ingest.responses import ApiError, json_response
from tlytics.ingest.writer import ErasureIncomplete
from tlytics.store import StoredEvent
from tlytics.timefmt import format_rfc3339_us

log = structlog.get_logger("tlytics.ingest")

PAGE_SIZE_DEFAULT = 10
PAGE_SIZE_MAX = 1000
RETRY_AFTER_S = "1"


async def _read_body(request: web.Request) -> bytes:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise ApiError(
            415,
            f"content type must be application/json, not {request.content_type}",
            field="Content-Type",
        )
    max_bytes = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"request body is larger than {max_bytes} bytes", limit=max_bytes)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body is larger than {max_bytes} bytes", limit=max_bytes) from None


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc.msg}", position=exc.pos) from None


async def _read_json(request: web.Request) -> Any:
    return _parse_json(await _read_body(request))


def _reference_spool_entry(
    body: bytes, *, batch: bool, now_us: int, max_events: int, max_event_bytes: int
) -> tuple[bytes, int]:
    """The reference rules (tlytics.events): slower, and they say exactly what is wrong."""
    payload = _parse_json(body)
    if batch:
        if not isinstance(payload, dict):
            raise ApiError(400, 'body must be a JSON object {"events": [...]}')
        raw_events = payload.get("events")
        if not isinstance(raw_events, list):
            raise ApiError(400, '"events" must be a JSON array of events', field="events")
    else:
        if not isinstance(payload, list):
            raise ApiError(400, "body must be a JSON array of events")
        raw_events = payload
    if len(raw_events) > max_events:
        raise ApiError(
            413,
            f"too many events in one request: {len(raw_events)} (at most {max_events})",
            limit=max_events,
        )
    try:
        events = normalize_events(raw_events, now_us)
    except InvalidEvent as exc:
        raise ApiError(400, exc.message, **exc.location()) from None
    for index, raw in enumerate(raw_events):
        size = len(orjson.dumps(raw))
        if size > max_event_bytes:
            raise ApiError(
                413,
                f"event is {size} bytes encoded, more than {max_event_bytes}",
                index=index,
                limit=max_event_bytes,
            )
    return orjson.dumps({"received_at": now_us, "events": events}), len(events)


async def _accept(request: web.Request, *, batch: bool) -> web.Response:
    body = await _read_body(request)
    settings = request.app[SETTINGS]
    limits = {"max_events": settings.max_events_per_request, "max_event_bytes": settings.max_event_bytes}
    now_us = time.time_ns() // 1000
    accepted = fast_spool_entry(body, batch=batch, now_us=now_us, **limits)
    if accepted is None:
        accepted = _reference_spool_entry(body, batch=batch, now_us=now_us, **limits)
    entry, count = accepted
    if count:
        try:
            await request.app[COMMITTER].append(entry, count)
        except SpoolFull as exc:
            raise ApiError(
                503, f"spool is full, retry later: {exc}", headers={"Retry-After": RETRY_AFTER_S}
            ) from None
        except SpoolError as exc:
            raise ApiError(
                503,
                f"cannot accept durably now, retry later: {exc}",
                headers={"Retry-After": RETRY_AFTER_S},
            ) from None
    request.app[METRICS].events_accepted.inc(count)
    counters = request.app[COUNTERS]
    counters.accepted_requests += 1
    counters.accepted_events += count
    request[EVENTS_ACCEPTED] = count
    return json_response({"message": f"Successfully queued {count} events", "count": count})


async def post_events(request: web.Request) -> web.Response:
    """POST /events: a JSON array of events."""
    return await _accept(request, batch=False)


async def post_batch(request: web.Request) -> web.Response:
    """POST /batch: {"events": [...]}."""
    return await _accept(request, batch=True)


def _positive_int(text: str | None, default: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        return default
    return value if value >= 1 else default


def _event_json(event: StoredEvent) -> dict[str, Any]:
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
    page = _positive_int(request.query.get("page"), 1)
    page_size = min(_positive_int(request.query.get("page_size"), PAGE_SIZE_DEFAULT), PAGE_SIZE_MAX)
    query = read_query(request)
    store = request.app[STORE]
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(
        request.app[READER],
        functools.partial(
            store.page, page, page_size, where=query.where, after=query.after, ascending=query.ascending
        ),
    )
    return json_response(
        {
            "events": [_event_json(event) for event in result.events],
            "total": result.total,
            "page": page,
            "page_size": page_size,
            "total_pages": -(-result.total // page_size),
            "next_cursor": encode_cursor(result.next_position) if result.next_position else None,
            "order": "asc" if query.ascending else "desc",
        }
    )


async def erase_events(request: web.Request) -> web.Response:
    """DELETE /events?where=data.user_id:123: erase matching events for good."""
    query = read_query(request)
    if query.where.is_empty:
        raise ApiError(
            400,
            "say which events to erase: where=data.<property>:<value>, key, since or until",
            field="where",
        )
    try:
        deleted = await request.app[WRITER].erase(query.where)
    except ErasureIncomplete as exc:
        log.warning("erasure_incomplete", deleted=exc.deleted, error=str(exc))
        raise ApiError(
            503,
            f"cannot erase now, retry later: {exc}",
            headers={"Retry-After": RETRY_AFTER_S},
            deleted=exc.deleted,
        ) from None
    # The audit line names the kind of filter, not its values (they are often personal data).
    log.info(
        "events_erased",
        deleted=deleted,
        where_properties=[path for path, _ in query.where.where],
        keys=len(query.where.keys),
        since=query.where.since_us is not None,
        until=query.where.until_us is not None,
    )
    return json_response({"deleted": deleted})


EXPORT_CHUNK = 5_000
_CSV_COLUMNS = ["id", "key", "timestamp", "received_at", "data"]


async def export(request: web.Request) -> web.StreamResponse:
    """GET /export?format=ndjson|csv: every matching event, streamed in constant memory."""
    export_format = request.query.get("format", "ndjson")
    if export_format not in ("ndjson", "csv"):
        raise ApiError(400, "format must be ndjson or csv", field="format")
    query = read_query(request)
    store = request.app[STORE]
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson" if export_format == "ndjson" else "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="tlytics-export.{export_format}"',
        }
    )
    await response.prepare(request)
    if export_format == "csv":
        await response.write((",".join(_CSV_COLUMNS) + "\r\n").encode())
    after = query.after
    while True:
        result = await loop.run_in_executor(
            request.app[READER],
            functools.partial(store.page, 1, EXPORT_CHUNK, where=query.where, after=after, ascending=query.ascending),
        )
        await response.write(_export_chunk(result.events, export_format))
        if result.next_position is None:
            break
        after = result.next_position
    await response.write_eof()
    return response


def _export_chunk(events: list[StoredEvent], export_format: str) -> bytes:
    if export_format == "ndjson":
        return b"".join(orjson.dumps(_event_json(event)) + b"\n" for event in events)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for event in events:
        writer.writerow([
            event.id, event.key, format_rfc3339_us(event.timestamp_us),
            format_rfc3339_us(event.received_at_us), event.data_json,
        ])
    return buffer.getvalue().encode()


LOOKUP_MAX_IDS = 10_000


async def lookup(request: web.Request) -> web.Response:
    """POST /lookup {"ids": [...]}: which of these event ids are stored (for replay tools)."""
    payload = await _read_json(request)
    ids = payload.get("ids") if isinstance(payload, dict) else None
    if not isinstance(ids, list):
        raise ApiError(400, '"ids" must be a JSON array of UUID strings', field="ids")
    if len(ids) > LOOKUP_MAX_IDS:
        raise ApiError(413, f"at most {LOOKUP_MAX_IDS} ids per lookup", limit=LOOKUP_MAX_IDS)
    raw_ids: list[bytes] = []
    for index, value in enumerate(ids):
        try:
            raw_ids.append(uuid.UUID(value).bytes if isinstance(value, str) else b"")
        except ValueError:
            raw_ids.append(b"")
        if not raw_ids[-1]:
            raise ApiError(400, "id must be a UUID string", index=index, field="ids")
    store = request.app[STORE]
    found = await asyncio.get_running_loop().run_in_executor(request.app[READER], store.existing_ids, raw_ids)
    return json_response({"present": [str(uuid.UUID(bytes=raw)) for raw in raw_ids if raw in found]})


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 while the server can accept events durably, else 503 (so a load
    balancer or Docker's health check sees it), with what an operator wants to see first."""
    app = request.app
    settings = app[SETTINGS]
    spool = app[SPOOL]
    store = app[STORE]
    writer = app[WRITER]
    committer = app[COMMITTER]
    loop = asyncio.get_running_loop()

    def read_figures() -> tuple[int, int, float, int, int | None, str | None]:
        try:
            stored: int | None = store.count()
            store_error = None
        except StoreError as exc:
            stored, store_error = None, str(exc)
        figures = spool.count(), spool.size_bytes(), spool.oldest_age_s(), spool.disk_free_bytes()
        return *figures, stored, store_error

    try:
        spool_entries, spool_bytes, lag_s, spool_free, stored_events, store_error = await loop.run_in_executor(
            app[READER], read_figures
        )
    except (SpoolError, OSError) as exc:
        return json_response({"status": "unavailable", "port": settings.port, "error": str(exc)}, status=503)
    problems = []
    if spool_bytes >= settings.spool_max_bytes:
        problems.append(f"spool is full ({spool_bytes} of {settings.spool_max_bytes} bytes)")
    if settings.spool_min_free_bytes and spool_free < settings.spool_min_free_bytes:
        problems.append(f"spool disk is full ({spool_free} bytes free, {settings.spool_min_free_bytes} kept in reserve)")
    if committer.failing_since is not None:
        problems.append(f"spool writes are failing: {committer.last_error}")
    return json_response(
        {
            "status": "unavailable" if problems else "healthy",
            "port": settings.port,
            "version": __version__,
            "problems": problems,
            "spool_entries": spool_entries,
            "spool_bytes": spool_bytes,
            "spool_max_bytes": settings.spool_max_bytes,
            "spool_disk_free_bytes": spool_free,
            "writer_lag_s": round(lag_s, 3),
            "writer_last_error": writer.last_error,
            "store": "ok" if store_error is None else store_error,
            "stored_events": stored_events,
            "accepted_events": app[COUNTERS].accepted_events,
            "accepted_requests": app[COUNTERS].accepted_requests,
        },
        status=503 if problems else 200,
        headers={"Retry-After": RETRY_AFTER_S} if problems else None,
    )


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    app = request.app
    spool = app[SPOOL]
    figures = app[METRICS]

    def refresh() -> bytes:
        figures.spool_entries.set(spool.count())
        figures.spool_bytes.set(spool.size_bytes())
        figures.writer_lag_seconds.set(spool.oldest_age_s())
        return generate_latest(figures.registry)

    body = await asyncio.get_running_loop().run_in_executor(app[READER], refresh)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


_OPENAPI = resources.files("tlytics.ingest").joinpath("openapi.json")
STATIC_DIR = Path(__file__).with_name("static")


async def dashboard(request: web.Request) -> web.Response:
    """GET /: the dashboard page (its data comes from the read endpoints, with the read key)."""
    return web.Response(body=(STATIC_DIR / "dashboard.html").read_bytes(), content_type="text/html")


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the API's contract (also what the schemathesis test checks against)."""
    return web.Response(body=_OPENAPI.read_bytes(), content_type="application/json")
