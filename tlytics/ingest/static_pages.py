"""The server's own documents: the dashboard page (its scripts and styles are served from
`static/`, its data comes from the read endpoints) and the OpenAPI contract."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

from tlytics.ingest.responses import ApiError

_OPENAPI = resources.files("tlytics.ingest").joinpath("openapi.json")
STATIC_DIR = Path(__file__).with_name("static")
# The files under /static/, listed once: a request names one of them or gets a 404, so no path
# (`..`, an encoded slash, bytes that are not UTF-8) ever reaches the file system.
STATIC_FILES = frozenset(path.name for path in STATIC_DIR.iterdir() if path.is_file())


async def dashboard(request: web.Request) -> web.Response:
    """GET /: the dashboard page (its data comes from the read endpoints, with the read key)."""
    return web.Response(body=(STATIC_DIR / "dashboard.html").read_bytes(), content_type="text/html")


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the API's contract (also what the schemathesis test checks against)."""
    return web.Response(body=_OPENAPI.read_bytes(), content_type="application/json")


async def page_script(request: web.Request) -> web.Response:
    """GET /t.js: the script a web page includes to send its page views and events (see
    static/t.js). Cached an hour by browsers: it changes only with the server's version."""
    return web.Response(
        body=(STATIC_DIR / "t.js").read_bytes(),
        content_type="text/javascript",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def static_file(request: web.Request) -> web.FileResponse:
    """GET /static/{name}: one of the dashboard's files (with ETag and Last-Modified). aiohttp's
    own static route answered a missing file with an empty 404 that the request log and the
    metrics recorded as a 200 (its status is decided after the handler returns); this one
    answers a JSON 404 like every other route."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise ApiError(404, f"no such file: /static/{name}")
    return web.FileResponse(STATIC_DIR / name)
