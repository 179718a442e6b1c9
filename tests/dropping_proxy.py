"""A loopback HTTP proxy for the real-client tests: it forwards each request to the server and
can drop the connection after the server answered (the client never sees the 200, so it sends
again), and keeps forwarding to a server restarted elsewhere (`target`)."""

from __future__ import annotations

import http.client
import socket
import threading
from urllib.parse import urlsplit

_HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}
_MAX_HEAD_BYTES = 65536


class DroppingProxy:
    """Forward HTTP/1.1 requests (with a Content-Length body) to `target`."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.drop_next_answers = 0
        self.dropped = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start(self) -> DroppingProxy:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(60)
        reader = connection.makefile("rb")
        try:
            for _ in range(100_000):  # one keep-alive connection's requests, bounded
                request = _read_request(reader)
                if request is None or not self._answer(connection, *request):
                    return
        except OSError:
            return
        finally:
            reader.close()
            connection.close()

    def _answer(self, connection: socket.socket, method: str, path: str, headers: dict[str, str], body: bytes) -> bool:
        """Forward one request; False when the connection is to be dropped."""
        target = urlsplit(self.target)
        upstream = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            answer = response.read()
        except OSError:
            return False  # the server is down: the client sees a dropped connection
        finally:
            upstream.close()
        with self._lock:
            self.forwarded += 1
            if self.drop_next_answers > 0:
                self.drop_next_answers -= 1
                self.dropped += 1
                return False  # the server took the request; its answer is lost on the way
        head = [f"HTTP/1.1 {response.status} {response.reason}"]
        head += [f"{name}: {value}" for name, value in response.getheaders() if name.lower() not in _HOP_HEADERS]
        head.append(f"Content-Length: {len(answer)}")
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer)
        return True


def _read_request(reader: object) -> tuple[str, str, dict[str, str], bytes] | None:
    readline = reader.readline  # type: ignore[attr-defined]
    line = readline(_MAX_HEAD_BYTES)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    for _ in range(200):
        header = readline(_MAX_HEAD_BYTES).decode("latin-1").rstrip("\r\n")
        if not header:
            break
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
    body = reader.read(length) if length else b""  # type: ignore[attr-defined]
    return method, path, {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}, body
