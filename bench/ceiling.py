"""The ceiling: a bare aiohttp handler that parses the body with orjson and drops it.

Nothing can accept events faster than this on the same machine with the same HTTP stack, so
the benchmark prints Tlytics' figures as a ratio of it. It runs on asyncio's own event loop,
as aiohttp does in a user's default install; `--uvloop` runs it on uvloop (as Tlytics runs).

    python -m bench.ceiling PORT [--uvloop]
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web


async def drop(request: web.Request) -> web.Response:
    events = orjson.loads(await request.read())
    return web.Response(body=orjson.dumps({"count": len(events)}), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"healthy"}', content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/events", drop)
    app.router.add_get("/health", health)
    loop = None
    if "--uvloop" in sys.argv[2:]:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
