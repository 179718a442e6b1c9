"""The `http_request` event every middleware records, built and emitted in one place so the
frameworks differ only in where they find each field.

Its data: method, route (the matched route's template, e.g. /users/{id}, or null when no
route matched), path (the raw path), status_code, duration_ms, client_ip (under the
record_ip policy), user_agent, is_bot and response_size. Paths in a middleware's `skip_paths`
are not recorded. Recording never changes or breaks
the application's response: any error in it is logged and swallowed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tlytics.client.client import Client
from tlytics.client.middleware.bots import is_bot
from tlytics.client.middleware.client_ip import RecordIP, checked_record_ip, recorded_ip

log = logging.getLogger("tlytics.client.middleware")

HTTP_REQUEST_KEY = "http_request"


@dataclass(frozen=True, slots=True)
class RequestSeen:
    """What a middleware saw of one request and its response."""

    method: str
    route: str | None
    path: str
    status_code: int
    started: float  # time.perf_counter() when the request arrived
    peer: str | None
    forwarded_for: str | None
    user_agent: str | None
    response_size: int | None


class PathSkipper:
    """Which request paths are not recorded (health checks, probes): `skip_paths` entries are
    exact paths ("/health"), or prefixes when they end with "*" ("/static/*" skips
    /static/app.js, and "/static*" /static too). Compared with the event's `path` field."""

    def __init__(self, skip_paths: Iterable[str]) -> None:
        if isinstance(skip_paths, str):  # "/health" alone would be read as "/", "h", "e"...
            raise ValueError(f"skip_paths must be a list of paths, not the string {skip_paths!r}")
        paths = list(skip_paths)
        wrong = [path for path in paths if not isinstance(path, str) or not path.startswith("/")]
        if wrong:
            raise ValueError(f"skip_paths entries must be paths starting with /, not {wrong!r}")
        self._exact = frozenset(path for path in paths if not path.endswith("*"))
        self._prefixes = tuple(path.rstrip("*") for path in paths if path.endswith("*"))

    def __call__(self, path: str) -> bool:
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))


class RequestRecorder:
    """Emits one event per request seen, under the options every middleware takes."""

    def __init__(
        self,
        client: Client,
        *,
        key: str,
        trust_forwarded: bool,
        record_ip: RecordIP | str,
        skip_paths: Iterable[str] = (),
    ) -> None:
        self.client = client
        self.key = key
        self.trust_forwarded = trust_forwarded
        # Checked here, when the application starts, not on its first request.
        self.record_ip = checked_record_ip(record_ip)
        self.skips = PathSkipper(skip_paths)

    def record(self, observe: Callable[[], RequestSeen]) -> None:
        """Emit the event for what `observe` reads off the request and response; reading runs
        here too, so a surprise in a framework's objects is logged, never raised into it."""
        path = None
        try:
            seen = observe()
            path = seen.path
            self.client.emit(
                self.key,
                {
                    "method": seen.method,
                    "route": seen.route,
                    "path": seen.path,
                    "status_code": seen.status_code,
                    "duration_ms": round((time.perf_counter() - seen.started) * 1000, 3),
                    "client_ip": recorded_ip(
                        seen.peer,
                        seen.forwarded_for,
                        trust_forwarded=self.trust_forwarded,
                        record_ip=self.record_ip,
                    ),
                    "user_agent": seen.user_agent,
                    "is_bot": is_bot(seen.user_agent),
                    "response_size": seen.response_size,
                },
            )
        except Exception:
            log.exception("tlytics_middleware_record_failed path=%s", path)
