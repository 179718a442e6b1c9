"""GET /export?format=ndjson|csv: every matching event, streamed in constant memory, in chunks
read by cursor. CSV cells that a spreadsheet would run as formulas are defused."""

from __future__ import annotations

import csv
import io

import orjson
from aiohttp import web

from tlytics.ingest.off_loop import run_read
from tlytics.ingest.query import read_query
from tlytics.ingest.responses import ApiError
from tlytics.ingest.state import STORE
from tlytics.ingest.view import event_json
from tlytics.store import Page, Position, StoredEvent
from tlytics.timefmt import format_rfc3339_us

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

    async def chunk_after(after: Position | None) -> Page:
        return await run_read(
            request, store.run, store.queries.page, 1, EXPORT_CHUNK, query.where, after, query.ascending
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
        return b"".join(orjson.dumps(event_json(event)) + b"\n" for event in events)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for event in events:
        writer.writerow(
            [
                _csv_cell(cell)
                for cell in (
                    event.id,
                    event.key,
                    format_rfc3339_us(event.timestamp_us),
                    format_rfc3339_us(event.received_at_us),
                    event.data_json,
                )
            ]
        )
    return buffer.getvalue().encode()
