"""HTTP to the server from a background thread, on the standard library's http.client (a
keep-alive connection, no event loop in the application's process), and the one function
that decides whether a failed delivery is worth retrying."""

from __future__ import annotations

import errno
import gzip
import http.client
import random
import socket
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import orjson

from tlytics.client.config import Config, seconds
from tlytics.errors import DeliveryError, ServerUnreachable

# Connecting failed because nothing listens there or it cannot be reached: retrying at once
# will not help, and a waiting flush()/close() should not spend its deadline on it.
_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH})


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


def classify(status: int) -> Outcome:
    """What a status means for a batch: delivered, worth retrying, or never going to be accepted."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 425, 429) or status >= 500:
        return Outcome.RETRY
    if 400 <= status < 500:
        return Outcome.REJECTED
    # 1xx/3xx are not answers this API gives: a proxy or a wrong URL. Keep the events.
    return Outcome.RETRY


def backoff_delay_s(attempt: int, *, max_delay_s: float, base_s: float = 0.5) -> float:
    """Capped exponential backoff with jitter (half fixed, half random), attempt counting from 1."""
    ceiling = min(max_delay_s, base_s * float(2 ** min(attempt - 1, 30)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_s(value: str | None, *, max_s: float = 300.0) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        delay = float(value)
    except ValueError:
        try:
            delay = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(delay, 0.0), max_s)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class Transport:
    """Posts batches to one server over a reused connection; not shared between threads."""

    def __init__(self, server_url: str, *, timeout_s: float, write_key: str | None, gzip_min_bytes: int) -> None:
        parts = urlsplit(server_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {server_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base_path = parts.path.rstrip("/")
        self._timeout_s = timeout_s
        self._gzip_min_bytes = gzip_min_bytes
        self._headers = {"Content-Type": "application/json", "User-Agent": "tlytics-python"}
        if write_key:
            self._headers["Authorization"] = f"Bearer {write_key}"
        self._connection: http.client.HTTPConnection | None = None

    @classmethod
    def for_config(cls, config: Config) -> Transport:
        """A transport with a client Config's URL, timeout, write key and gzip threshold."""
        return cls(
            config.server_url,
            timeout_s=seconds(config.timeout),
            write_key=config.write_key,
            gzip_min_bytes=config.gzip_min_bytes,
        )

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._https:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout_s, context=ssl.create_default_context()
                )
            else:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        return self._connection

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """One request; raises DeliveryError on connection trouble or a timeout."""
        headers = dict(self._headers)
        if body is not None and len(body) >= self._gzip_min_bytes:
            # Level 1: most of the size win for a fraction of the CPU of the default 9.
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        connection = self._connect()
        try:
            connection.request(method, self._base_path + path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            self.close()
            if isinstance(exc, socket.gaierror) or (
                isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and exc.errno in _UNREACHABLE_ERRNOS
            ):
                raise ServerUnreachable(f"{method} {path} failed: {exc!r}") from exc
            raise DeliveryError(f"{method} {path} failed: {exc!r}") from exc
        if response.will_close:
            self.close()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)

    def post_batch(self, events_json: bytes) -> Reply:
        """POST /batch with `events_json`, the bytes of a JSON array of events."""
        return self.request("POST", "/batch", b'{"events":' + events_json + b"}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
