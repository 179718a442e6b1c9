"""The server's own documents: the dashboard page (its scripts and styles are served from
`static/`, its data comes from the read endpoints) and the OpenAPI contract."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

_OPENAPI = resources.files("tlytics.ingest").joinpath("openapi.json")
STATIC_DIR = Path(__file__).with_name("static")


async def dashboard(request: web.Request) -> web.Response:
    """GET /: the dashboard page (its data comes from the read endpoints, with the read key)."""
    return web.Response(body=(STATIC_DIR / "dashboard.html").read_bytes(), content_type="text/html")


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the API's contract (also what the schemathesis test checks against)."""
    return web.Response(body=_OPENAPI.read_bytes(), content_type="application/json")
