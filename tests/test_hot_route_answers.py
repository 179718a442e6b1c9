"""Every kind of answer the ingest routes give, byte for byte as it was before the 1-event
request path was trimmed (issue 22): status, body, and every header in the order it goes out
(only `Date`, the `Server` version and, in a 429, the wait until a token are left out).

The expected answers are `hot_route_answers.json`, recorded from main at df07fc8 by this same
code (`TLYTICS_RECORD_ANSWERS=1 pytest tests/test_hot_route_answers.py` writes it again).
Headers are read off the wire (`raw_headers`, a real server on loopback), so a header added
twice, dropped, reordered or set by another hook than before shows here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tlytics.errors import SpoolError
from tlytics.ingest.responses import SECURITY_HEADERS
from tlytics.ingest.state import SPOOL
from tlytics.rate import parse_rate

_RECORDED = Path(__file__).with_name("hot_route_answers.json")
_RECORD = os.environ.get("TLYTICS_RECORD_ANSWERS") == "1"
_EVENT = {"key": "page_view", "data": {"n": 1}}
_PAGE = "https://shop.example"


async def _observe(client: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    headers = {"X-Request-Id": "rid-1", **kwargs.pop("headers", {})}
    response = await client.request(method, path, headers=headers, **kwargs)
    raw = await response.read()
    seen = []
    for name, value in response.raw_headers:
        name_text, value_text = name.decode(), value.decode()
        if name_text == "Date":
            value_text = "<date>"
        elif name_text == "Server":
            value_text = "<server>"  # names the Python and aiohttp versions
        seen.append([name_text, value_text])
    body: Any = json.loads(raw) if raw else None
    if isinstance(body, dict) and "retry_after_s" in body:
        body["retry_after_s"] = "<wait>"  # how long until a token: a time, not a constant
        seen = [header if header[0] != "Content-Length" else ["Content-Length", "<length>"] for header in seen]
    return {"request": f"{method} {path}", "status": response.status, "headers": seen, "body": body}


def _compare(test: str, observed: list[dict[str, Any]]) -> None:
    recorded = json.loads(_RECORDED.read_text()) if _RECORDED.exists() else {}
    if _RECORD:
        recorded[test] = observed
        _RECORDED.write_text(json.dumps(recorded, indent=1) + "\n")
        return
    assert len(observed) == len(recorded[test])
    for seen, expected in zip(observed, recorded[test], strict=True):
        assert seen == expected


async def test_answers_of_an_open_server(aiohttp_client: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app: web.Application = make_app(max_events_per_request=2)
    client = await aiohttp_client(app)
    observed = [
        await _observe(client, "POST", "/events", json=[_EVENT]),
        await _observe(client, "POST", "/batch", json={"events": [_EVENT]}),
        await _observe(client, "POST", "/events", json=[]),
        await _observe(client, "POST", "/events", json=[{"key": ""}]),
        await _observe(client, "POST", "/events", json=[_EVENT] * 3),
        await _observe(client, "POST", "/events", data=b"[]", headers={"Content-Type": "text/plain"}),
        await _observe(client, "POST", "/batch", data=b"{", headers={"Content-Type": "application/json"}),
        await _observe(client, "POST", "/events", data=b"x" * 10, headers={"Content-Encoding": "br"}),
        await _observe(client, "GET", "/nowhere"),
        await _observe(client, "GET", "/batch"),
    ]

    def broken(values: Any) -> Any:
        raise SpoolError("disk I/O error (injected)")

    monkeypatch.setattr(app[SPOOL], "append_many", broken)
    observed.append(await _observe(client, "POST", "/events", json=[_EVENT]))
    _compare("open_server", observed)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_answers_with_keys_and_limits(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(
        make_app(write_keys=("w-secret",), read_keys=("r-secret",), rate_limit=parse_rate("1/s,burst=1"))
    )
    observed = [
        await _observe(client, "POST", "/events", json=[_EVENT]),
        await _observe(client, "POST", "/events", json=[_EVENT], headers=_bearer("unknown")),
        await _observe(client, "POST", "/batch", json={"events": [_EVENT]}, headers=_bearer("r-secret")),
        await _observe(client, "POST", "/events", json=[_EVENT], headers=_bearer("w-secret")),
        await _observe(client, "POST", "/events", json=[_EVENT], headers=_bearer("w-secret")),
    ]
    _compare("keys_and_limits", observed)


async def test_answers_to_a_web_page(aiohttp_client: Any, make_app: Any) -> None:
    client = await aiohttp_client(make_app(cors_origins=(_PAGE,)))
    page = {"Origin": _PAGE}
    observed = [
        await _observe(client, "POST", "/events", json=[_EVENT], headers=page),
        await _observe(
            client,
            "POST",
            "/batch",
            data=json.dumps({"events": [_EVENT]}),
            headers={**page, "Content-Type": "text/plain"},
        ),
        await _observe(client, "POST", "/events", json=[{"key": ""}], headers=page),
        await _observe(client, "OPTIONS", "/events", headers={**page, "Access-Control-Request-Method": "POST"}),
        await _observe(client, "OPTIONS", "/batch", headers={"Origin": "https://evil.example"}),
        await _observe(client, "POST", "/events", json=[_EVENT], headers={"Origin": "https://evil.example"}),
    ]
    _compare("web_page", observed)


@pytest.mark.parametrize("path", ["/health", "/", "/openapi.json", "/static/dashboard.js", "/export", "/metrics"])
async def test_other_answers_keep_their_headers(aiohttp_client: Any, make_app: Any, path: str) -> None:
    """The other routes (a finished answer, a file, a streamed one): the security headers and
    the request id, each once, last, as before."""
    client = await aiohttp_client(make_app())
    response = await client.get(path, headers={"X-Request-Id": "rid-2"})
    await response.read()
    assert response.status == 200
    seen = [(name.decode(), value.decode()) for name, value in response.raw_headers]
    assert seen[-4:] == [*SECURITY_HEADERS.items(), ("X-Request-Id", "rid-2")]
    assert len({name.lower() for name, _ in seen}) == len(seen)
