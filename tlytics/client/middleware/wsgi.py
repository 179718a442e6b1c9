"""Request recording for WSGI applications (Flask, any WSGI app; Django has its own
middleware, which also knows the route)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tlytics.client.client import Client
from tlytics.client.middleware.client_ip import RecordIP
from tlytics.client.middleware.recording import HTTP_REQUEST_KEY, RequestRecorder, RequestSeen

log = logging.getLogger("tlytics.client.middleware")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _route_template(environ: dict[str, Any]) -> str | None:
    """The rule Flask (werkzeug routing) matched, e.g. /users/<int:id>; None otherwise.

    Read while the response starts: Flask's request is in the environ then, and gone once
    its request context ends, before the body is sent."""
    url_rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
    rule = getattr(url_rule, "rule", None)
    return rule if isinstance(rule, str) else None


def _route_matched_before_failing(app: WSGIApp, environ: dict[str, Any]) -> str | None:
    """The rule of a request whose exception left a Flask app (as Flask lets it when testing
    or debugging): no response started, and Flask has taken its request out of the environ,
    so the rule is matched again with the app's own URL map. None for an app without one."""
    url_map = getattr(getattr(app, "__self__", app), "url_map", None)
    if url_map is None:
        return None
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    try:
        rule, _ = url_map.bind_to_environ(environ).match(return_rule=True)
    except (HTTPException, RequestRedirect):  # no rule matched, or only with a redirect
        return None
    text = getattr(rule, "rule", None)
    return text if isinstance(text, str) else None


def _wsgi_text(value: object) -> str:
    """A WSGI environ string as the text it stands for: PEP 3333 gives the URL's bytes read as
    latin-1, so /café arrives as /cafÃ©; bytes that are not UTF-8 become U+FFFD (as werkzeug
    decodes them). A string that is not latin-1 already is text, kept as it is."""
    text = str(value)
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text


class WSGIMiddleware:
    """WSGI middleware: `app.wsgi_app = WSGIMiddleware(app.wsgi_app, client)` in Flask.
    The event is recorded when the server closes the response, so the size is the real one.
    Options as `aiohttp_middleware`'s."""

    def __init__(
        self,
        app: WSGIApp,
        client: Client,
        *,
        key: str = HTTP_REQUEST_KEY,
        trust_forwarded: bool = False,
        record_ip: RecordIP = "truncated",
        skip_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.recorder = RequestRecorder(
            client, key=key, trust_forwarded=trust_forwarded, record_ip=record_ip, skip_paths=skip_paths
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = _wsgi_text(environ.get("PATH_INFO", ""))
        if self.recorder.skips(path):
            return self.app(environ, start_response)
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "size": 0, "route": None, "recorded": False}

        def observing_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                state["status"] = int(status.split(" ", 1)[0])
            except ValueError:
                pass
            try:
                state["route"] = _route_template(environ)
            except Exception:  # recording never breaks the response
                log.exception("tlytics_middleware_observe_failed")
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        def record() -> None:
            if state["recorded"]:
                return
            state["recorded"] = True
            self.recorder.record(
                lambda: RequestSeen(
                    method=str(environ.get("REQUEST_METHOD", "")),
                    route=state["route"],
                    path=path,
                    status_code=state["status"],
                    started=started,
                    peer=environ.get("REMOTE_ADDR"),
                    forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"),
                    user_agent=environ.get("HTTP_USER_AGENT"),
                    response_size=state["size"],
                )
            )

        try:
            body = self.app(environ, observing_start_response)
        except BaseException:
            if state["route"] is None:
                try:
                    state["route"] = _route_matched_before_failing(self.app, environ)
                except Exception:  # recording never breaks the response
                    log.exception("tlytics_middleware_observe_failed")
            record()
            raise
        return _ObservedBody(body, state, record)


class _ObservedBody:
    """Passes the application's body through, counting bytes; records on close()."""

    def __init__(self, body: Iterable[bytes], state: dict[str, Any], record: Callable[[], None]) -> None:
        self._body = body
        self._state = state
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._state["size"] += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._record()
