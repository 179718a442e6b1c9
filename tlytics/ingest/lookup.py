"""POST /lookup {"ids": [...]}: which of these event ids are stored, so a replay tool sends
only what is missing."""

from __future__ import annotations

import uuid

from aiohttp import web

from tlytics.errors import InvalidRequest, RequestTooLarge
from tlytics.ingest.bodies import read_json
from tlytics.ingest.off_loop import run_read
from tlytics.ingest.responses import json_response
from tlytics.ingest.state import STORE

LOOKUP_MAX_IDS = 10_000


def _raw_ids(ids: list[object]) -> list[bytes]:
    """Each id's 16 bytes; InvalidRequest naming the first that is not a UUID string."""
    raw_ids: list[bytes] = []
    for index, value in enumerate(ids):
        try:
            raw_ids.append(uuid.UUID(value).bytes if isinstance(value, str) else b"")
        except ValueError:
            raw_ids.append(b"")
        if not raw_ids[-1]:
            raise InvalidRequest("id must be a UUID string", index=index, field="ids")
    return raw_ids


async def lookup(request: web.Request) -> web.Response:
    """POST /lookup {"ids": [...]}: which of these event ids are stored (for replay tools)."""
    payload = await read_json(request)
    ids = payload.get("ids") if isinstance(payload, dict) else None
    if not isinstance(ids, list):
        raise InvalidRequest('"ids" must be a JSON array of UUID strings', field="ids")
    if len(ids) > LOOKUP_MAX_IDS:
        raise RequestTooLarge(
            f"at most {LOOKUP_MAX_IDS} ids per lookup", limit=LOOKUP_MAX_IDS, limit_of="ids_per_request"
        )
    raw_ids = _raw_ids(ids)
    store = request.app[STORE]
    found = await run_read(request, store.run, store.queries.existing_ids, raw_ids)
    return json_response({"present": [str(uuid.UUID(bytes=raw)) for raw in raw_ids if raw in found]})
