"""JSON answers: every success and every error the API gives is a JSON body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def json_error(status: int, message: str, *, headers: Mapping[str, str] | None = None, **details: Any) -> web.Response:
    """An error answer `{"error": message, **details}`."""
    return json_response({"error": message, **details}, status=status, headers=headers)


class ApiError(Exception):
    """An answer that is HTTP and nothing else (a query parameter, a key, a content type):
    raised by handlers, answered as it is by the middleware. Errors with a meaning beyond HTTP
    are the typed errors of `tlytics.errors`, mapped to their answers in `error_answers`."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.details = details

    def response(self) -> web.Response:
        return json_error(self.status, self.message, headers=self.headers, **self.details)
