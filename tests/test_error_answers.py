"""Errors are mapped to HTTP answers in one place: each typed error the server raises on
purpose has its status, headers and JSON details; anything else is a bug, answered 500."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from tlytics.errors import InvalidEvent, InvalidRequest, RequestTooLarge, SpoolError, SpoolFull, StoreError
from tlytics.ingest.error_answers import error_answer
from tlytics.ingest.responses import ApiError
from tlytics.writer import ErasureIncomplete

RETRY = {"Retry-After": "1"}


@pytest.mark.parametrize(
    ("error", "status", "headers", "body"),
    [
        (InvalidRequest("invalid JSON: x", position=3), 400, None, {"error": "invalid JSON: x", "position": 3}),
        (
            InvalidEvent("key must not be empty", index=1, field="key"),
            400,
            None,
            {"error": "key must not be empty", "index": 1, "field": "key"},
        ),
        (
            RequestTooLarge("event too large", index=0, limit=10, limit_of="bytes_per_event"),
            413,
            None,
            {"error": "event too large", "index": 0, "limit": 10, "limit_of": "bytes_per_event"},
        ),
        (SpoolFull("no room"), 503, RETRY, {"error": "spool is full, retry later: no room"}),
        (SpoolError("disk gone"), 503, RETRY, {"error": "cannot accept durably now, retry later: disk gone"}),
        (
            ErasureIncomplete("store busy", deleted=7),
            503,
            RETRY,
            {"error": "cannot erase now, retry later: store busy", "deleted": 7},
        ),
        (
            ApiError(401, "needs a key", headers={"WWW-Authenticate": "Bearer"}),
            401,
            {"WWW-Authenticate": "Bearer"},
            {"error": "needs a key"},
        ),
    ],
)
def test_each_error_has_its_answer(
    error: Exception, status: int, headers: dict[str, str] | None, body: dict[str, Any]
) -> None:
    answer = error_answer(make_mocked_request("POST", "/events"), error)
    assert answer is not None
    response = answer.response()
    assert response.status == status
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes) and orjson.loads(response.body) == body
    for name, value in (headers or {}).items():
        assert response.headers[name] == value
    if headers is None:
        assert "Retry-After" not in response.headers


def test_router_errors_become_json_and_keep_allow() -> None:
    request = make_mocked_request("PUT", "/view")
    answer = error_answer(request, web.HTTPMethodNotAllowed("PUT", ["GET", "HEAD"]))
    assert answer is not None and answer.status == 405
    assert answer.message == "method PUT is not allowed on /view"
    assert answer.headers is not None and set(answer.headers["Allow"].split(",")) == {"GET", "HEAD"}
    missing = error_answer(make_mocked_request("GET", "/nope"), web.HTTPNotFound())
    assert missing is not None and (missing.status, missing.message) == (404, "no such endpoint: GET /nope")


@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyError("x"), StoreError("read failed")])
def test_anything_else_is_left_to_the_500(error: Exception) -> None:
    assert error_answer(make_mocked_request("GET", "/view"), error) is None
