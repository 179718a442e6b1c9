"""Helpers for testing an application that uses the Tlytics client: a client that keeps every
event in memory, checked by the same rules as a real one, for assertions.

    from tlytics.testing import capturing_client

    def test_signup_is_recorded():
        with capturing_client() as client:
            app = make_app(analytics=client)
            app.signup("a@example.com")
        assert [event.key for event in client.captured] == ["user_signup"]

An application that makes its own Client from the environment gets the same with
`TLYTICS_CLIENT_CAPTURE=1`: its client's `captured` list then holds what it emitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tlytics.client.client import Client
from tlytics.client.config import Config


@contextmanager
def capturing_client(**config: Any) -> Iterator[Client]:
    """A Client with `Config(capture=True, **config)`: no thread, no disk, no network; each
    event emitted is validated (InvalidEvent as for real), passed through default_data,
    context and before_send, and appended to `client.captured` as the server would store it."""
    client = Client(Config(capture=True, **config))
    try:
        yield client
    finally:
        client.close()


__all__ = ["capturing_client"]
