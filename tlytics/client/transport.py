"""HTTP to the server from a background thread, on the standard library's http.client (a
keep-alive connection, no event loop in the application's process), and the one function
that decides whether a failed delivery is worth retrying.

Everything that sends goes through a `BaseTransport`: `Transport` speaks HTTP (through the
proxy the environment names, `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, with the configured CA
bundle or SSL context and extra headers); `MockTransport` (httpx's model) hands each request
to a function, so tests check the retry, 413 and Retry-After rules without sockets.
"""

from __future__ import annotations

import errno
import gzip
import http.client
import random
import socket
import ssl
import threading
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

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


class BaseTransport:
    """What the client sends through: one request at a time, answered by a Reply."""

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """One request; raises DeliveryError on connection trouble or a timeout."""
        raise NotImplementedError

    def post_batch(self, events_json: bytes) -> Reply:
        """POST /batch with `events_json`, the bytes of a JSON array of events."""
        return self.request("POST", "/batch", b'{"events":' + events_json + b"}")

    def close(self) -> None:
        """Let go of the connection, if any."""


@dataclass(frozen=True, slots=True)
class MockRequest:
    """A request as MockTransport's handler sees it: the body decompressed."""

    method: str
    path: str
    body: bytes

    def events(self) -> list[Any]:
        """The events of a POST /batch."""
        return list(orjson.loads(self.body)["events"])


class MockTransport(BaseTransport):
    """Answers every request with `handler(request)`, in the calling thread, without a socket;
    the handler may raise DeliveryError to stand for a connection failure. Thread-safe: calls
    are serialized, and `requests` records each one in order."""

    def __init__(self, handler: Callable[[MockRequest], Reply]) -> None:
        self._handler = handler
        self._lock = threading.Lock()
        self.requests: list[MockRequest] = []

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        with self._lock:
            request = MockRequest(method, path, body or b"")
            self.requests.append(request)
            return self._handler(request)


def reply(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> Reply:
    """A Reply for MockTransport handlers: `body` encoded as JSON, header names lowercased."""
    if body is None and 200 <= status < 300:
        body = {"message": "Successfully queued", "count": 0}
    return Reply(status, {k.lower(): v for k, v in (headers or {}).items()}, orjson.dumps(body))


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    """How to reach the server beyond its URL: CA bundle or SSL context, extra headers, and
    whether the proxy environment variables apply."""

    ca_bundle: str | None = None
    ssl_context: ssl.SSLContext | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    use_proxy_environment: bool = True


def _proxy_for(scheme: str, host: str, port: int) -> tuple[str, int, dict[str, str]] | None:
    """The proxy (host, port, headers) the environment names for this server, or None."""
    proxies = urllib.request.getproxies_environment()
    proxy_url = proxies.get(scheme)
    if not proxy_url or urllib.request.proxy_bypass_environment(f"{host}:{port}", proxies):  # type: ignore[attr-defined]
        return None
    if "://" not in proxy_url:
        proxy_url = "http://" + proxy_url
    parts = urlsplit(proxy_url)
    if not parts.hostname:
        return None
    headers: dict[str, str] = {}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + b64encode(credentials.encode()).decode()
    return parts.hostname, parts.port or 8080, headers


class Transport(BaseTransport):
    """Posts batches to one server over a reused connection; not shared between threads."""

    def __init__(
        self,
        server_url: str,
        *,
        timeout_s: float,
        write_key: str | None,
        gzip_min_bytes: int,
        network: NetworkOptions | None = None,
    ) -> None:
        parts = urlsplit(server_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {server_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base_path = parts.path.rstrip("/")
        self._timeout_s = timeout_s
        self._gzip_min_bytes = gzip_min_bytes
        self._network = network or NetworkOptions()
        self._headers = {"Content-Type": "application/json", "User-Agent": "tlytics-python"}
        self._headers.update(self._network.headers)
        if write_key:
            self._headers["Authorization"] = f"Bearer {write_key}"
        self._proxy = _proxy_for(parts.scheme, self._host, self._port) if self._network.use_proxy_environment else None
        # A plain-HTTP proxy takes the absolute URL; HTTPS goes through a CONNECT tunnel.
        self._path_prefix = self._base_path
        if self._proxy is not None and not self._https:
            self._path_prefix = f"http://{self._host}:{self._port}{self._base_path}"
            self._headers.update(self._proxy[2])
        self._connection: http.client.HTTPConnection | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._network.ssl_context is not None:
            return self._network.ssl_context
        return ssl.create_default_context(cafile=self._network.ca_bundle)

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            host, port = (self._proxy[0], self._proxy[1]) if self._proxy is not None else (self._host, self._port)
            if self._https:
                self._connection = http.client.HTTPSConnection(
                    host, port, timeout=self._timeout_s, context=self._ssl_context()
                )
                if self._proxy is not None:
                    self._connection.set_tunnel(self._host, self._port, headers=self._proxy[2])
            else:
                self._connection = http.client.HTTPConnection(host, port, timeout=self._timeout_s)
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
            connection.request(method, self._path_prefix + path, body=body, headers=headers)
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

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
