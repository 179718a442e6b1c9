"""GET /whoami: what the presented key may do, so a page (the dashboard, opened from a share
link carrying a stats key) can show only the panels its key opens. Open: it reveals nothing a
request to any other route would not (401 or 200), and names a key by its label only."""

from __future__ import annotations

from aiohttp import web

from tlytics.ingest.auth import may_call, presented_key
from tlytics.ingest.keys import SCOPES
from tlytics.ingest.responses import json_response
from tlytics.ingest.state import KEYS


async def whoami(request: web.Request) -> web.Response:
    """GET /whoami: `{"scope", "label", "allowed"}` for the request's `Authorization: Bearer`
    key: `scope` and `label` are null without a known key; `allowed` lists the levels whose
    routes this request may call (on a server without reading keys, an anonymous request may
    read everything)."""
    ring = request.app[KEYS].ring
    key = presented_key(request, ring) if ring.keys else None
    return json_response(
        {
            "scope": key.scope if key is not None else None,
            "label": key.label if key is not None else None,
            "allowed": [level for level in SCOPES if may_call(ring, level, key)],
        }
    )
