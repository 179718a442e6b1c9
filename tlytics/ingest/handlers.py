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
import zlib
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tlytics import __version__
from tlytics.errors import InvalidRequest, RequestTooLarge, SpoolError, SpoolFull, StoreError
from tlytics.ingest.codec import parse_body, spool_entry
from tlytics.ingest.query import encode_cursor, page_and_size, read_query
from tlytics.ingest.keys import COMMITTER, COUNTERS, METRICS, EVENTS_ACCEPTED, READER, SETTINGS, SPOOL, STORE, WRITER
from tlytics.ingest.keys import QUARANTINE
from tlytics.ingest.responses import ApiError, json_response
from tlytics.ingest.writer import ErasureIncomplete
from tlytics.store import Page, Position, StoredEvent
from tlytics.timefmt import format_rfc3339_us

log = structlog.get_logger("tlytics.ingest")

RETRY_AFTER_S = "1"
# Content codings of request bodies, decoded here rather than by aiohttp (create_app turns its
# decoding off) so that a corrupt or unsupported body gets a JSON error like any other: zlib's
# wbits for each (deflate is chosen per body: zlib-wrapped or raw, as clients send both).
_BODY_DECODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def _read_body(request: web.Request) -> bytes:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise ApiError(
            415,
            f"content type must be application/json, not {request.content_type}",
            field="Content-Type",
        )
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity") and encoding not in _BODY_DECODINGS:
        raise ApiError(
            415,
            f"content encoding {encoding[:100]!r} is not supported: send gzip, deflate or none",
            field="Content-Encoding",
        )
    settings = request.app[SETTINGS]
    max_bytes = settings.max_body_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"request body is larger than {max_bytes} bytes", limit=max_bytes)
    try:
        if request.content.is_eof():  # all there already (most bodies): no timer to arm, ~9 µs saved
            body = await request.read()
        else:
            async with asyncio.timeout(settings.body_timeout_s):
                body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body is larger than {max_bytes} bytes", limit=max_bytes) from None
    except TimeoutError:
        # A client that stalls mid-body would hold a connection and a task for ever: drop it.
        # Its fault, not ours: a warning without a traceback, and a 4xx in the metrics.
        log.warning("client_body_timeout", method=request.method, path=request.path,
                    remote=request.remote, timeout_s=settings.body_timeout_s)
        raise ApiError(
            408, f"the request body did not arrive within {settings.body_timeout_s:g} s",
            headers={"Connection": "close"},
        ) from None
    if encoding in _BODY_DECODINGS:
        return _decode_body(body, encoding, max_bytes)
    return body


def _decode_body(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Inflate a gzip or deflate body, refusing past `max_bytes` of output (a gzip bomb is a
    413 after max_bytes of work, not an out-of-memory)."""
    wbits = _BODY_DECODINGS[encoding]
    if encoding == "deflate" and body[:1] and body[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, without the zlib header
    decompressor = zlib.decompressobj(wbits)
    pending = body
    out = bytearray()
    try:
        while True:
            out += decompressor.decompress(pending, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise ApiError(413, f"request body is larger than {max_bytes} bytes once decompressed", limit=max_bytes)
            # Below the limit, decompress() consumed all its input: what is left follows the
            # end of the stream, which for gzip is the next member (RFC 1952 allows several).
            pending = decompressor.unused_data
            if not decompressor.eof or not pending:
                break
            if wbits != _BODY_DECODINGS["gzip"]:
                raise zlib.error("data after the end of the stream")
            decompressor = zlib.decompressobj(wbits)
    except zlib.error as exc:
        raise ApiError(400, f"request body is not valid {encoding}: {exc}", field="Content-Encoding") from None
    if not decompressor.eof:
        raise ApiError(400, f"request body is not valid {encoding}: it ends early", field="Content-Encoding")
    return bytes(out)


def _parse_json(body: bytes) -> Any:
    try:
        return parse_body(body)
    except InvalidRequest as exc:
        raise _api_error(exc) from None


def _api_error(exc: InvalidRequest) -> ApiError:
    """The answer to a request body the server refuses: 413 when too large, else 400."""
    return ApiError(413 if isinstance(exc, RequestTooLarge) else 400, exc.message, **exc.details)


async def _read_json(request: web.Request) -> Any:
    return _parse_json(await _read_body(request))


async def _accept(request: web.Request, *, batch: bool) -> web.Response:
    body = await _read_body(request)
    settings = request.app[SETTINGS]
    try:
        entry, count = spool_entry(
            body,
            batch=batch,
            now_us=time.time_ns() // 1000,
            max_events=settings.max_events_per_request,
            max_event_bytes=settings.max_event_bytes,
        )
    except InvalidRequest as exc:
        raise _api_error(exc) from None
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
    page, page_size = page_and_size(request)
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
# A cell starting so is a formula to a spreadsheet (OWASP, "CSV Injection"): it gets a `'`
# prefix. A cell that starts with `'` gets one too, so stripping one leading `'` always gives
# the value back.
_CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


async def export(request: web.Request) -> web.StreamResponse:
    """GET /export?format=ndjson|csv: every matching event, streamed in constant memory."""
    export_format = request.query.get("format", "ndjson")
    if export_format not in ("ndjson", "csv"):
        raise ApiError(400, "format must be ndjson or csv", field="format")
    query = read_query(request)
    store = request.app[STORE]
    loop = asyncio.get_running_loop()

    async def chunk_after(after: Position | None) -> Page:
        return await loop.run_in_executor(
            request.app[READER],
            functools.partial(store.page, 1, EXPORT_CHUNK, where=query.where, after=after, ascending=query.ascending),
        )

    # The first chunk is read before the 200 goes out: once the headers are sent, an error can
    # only cut the stream short, and a truncated file looks like a complete export.
    result = await chunk_after(query.after)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson" if export_format == "ndjson" else "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="tlytics-export.{export_format}"',
        }
    )
    await response.prepare(request)
    if export_format == "csv":
        await response.write((",".join(_CSV_COLUMNS) + "\r\n").encode())
    while True:
        await response.write(_export_chunk(result.events, export_format))
        if result.next_position is None:
            break
        result = await chunk_after(result.next_position)
    await response.write_eof()
    return response


def _csv_cell(text: str) -> str:
    return "'" + text if text.startswith(_CSV_FORMULA_STARTS) else text


def _export_chunk(events: list[StoredEvent], export_format: str) -> bytes:
    if export_format == "ndjson":
        return b"".join(orjson.dumps(_event_json(event)) + b"\n" for event in events)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for event in events:
        writer.writerow([
            _csv_cell(cell) for cell in (
                event.id, event.key, format_rfc3339_us(event.timestamp_us),
                format_rfc3339_us(event.received_at_us), event.data_json,
            )
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
    quarantine = app[QUARANTINE]
    loop = asyncio.get_running_loop()

    def read_figures() -> tuple[int, int, float, int, int, int, int | None, str | None]:
        try:
            stored: int | None = store.count()
            store_error = None
        except StoreError as exc:
            stored, store_error = None, str(exc)
        figures = spool.count(), spool.size_bytes(), spool.oldest_age_s(), spool.disk_free_bytes()
        return *figures, quarantine.count(), quarantine.size_bytes(), stored, store_error

    try:
        (
            spool_entries, spool_bytes, lag_s, spool_free, quarantined, quarantine_bytes, stored_events, store_error
        ) = await loop.run_in_executor(app[READER], read_figures)
    except (SpoolError, OSError) as exc:
        return json_response({"status": "unavailable", "port": settings.port, "error": str(exc)}, status=503)
    problems = []
    if spool_bytes >= settings.spool_max_bytes:
        problems.append(f"spool is full ({spool_bytes} of {settings.spool_max_bytes} bytes)")
    if settings.spool_min_free_bytes and spool_free < settings.spool_min_free_bytes:
        problems.append(f"spool disk is full ({spool_free} bytes free, {settings.spool_min_free_bytes} kept in reserve)")
    if committer.failing_since is not None:
        problems.append(f"spool writes are failing: {committer.last_error}")
    unavailable = bool(problems)
    if quarantined:
        # Needs an operator (the entries were acknowledged), but ingest still works: listed,
        # without turning the answer into a 503 that would take the server out of rotation.
        problems.append(
            f"{quarantined} unreadable spool entries quarantined in {quarantine.directory}"
            " (acknowledged events that could not be stored; inspect them, tlytics-replay can resend them)"
        )
    return json_response(
        {
            "status": "unavailable" if unavailable else "healthy",
            "port": settings.port,
            "version": __version__,
            "problems": problems,
            "spool_entries": spool_entries,
            "spool_bytes": spool_bytes,
            "spool_max_bytes": settings.spool_max_bytes,
            "spool_disk_free_bytes": spool_free,
            "quarantined_entries": quarantined,
            "quarantine_bytes": quarantine_bytes,
            "writer_lag_s": round(lag_s, 3),
            "writer_last_error": writer.last_error,
            "store": "ok" if store_error is None else store_error,
            "stored_events": stored_events,
            "accepted_events": app[COUNTERS].accepted_events,
            "accepted_requests": app[COUNTERS].accepted_requests,
        },
        status=503 if unavailable else 200,
        headers={"Retry-After": RETRY_AFTER_S} if unavailable else None,
    )


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    app = request.app
    spool = app[SPOOL]
    quarantine = app[QUARANTINE]
    figures = app[METRICS]

    def refresh() -> bytes:
        figures.spool_entries.set(spool.count())
        figures.spool_bytes.set(spool.size_bytes())
        figures.quarantined_entries.set(quarantine.count())
        figures.quarantine_bytes.set(quarantine.size_bytes())
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
