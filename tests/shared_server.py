"""What a test needs on a server it shares with other tests (conftest's `shared_server`): the
events stored since the test began, so that it asserts on its own events exactly as it would
on a fresh server's, never on totals."""

from __future__ import annotations

from typing import Any

from tests.helpers import ServerProcess, http_json

PAGES_MAX = 1000


def stored_events(server: ServerProcess) -> list[dict[str, Any]]:
    """Every event `server` stored (newest first), read through /view page by page."""
    events: list[dict[str, Any]] = []
    for page in range(1, PAGES_MAX + 1):
        status, body = http_json("GET", f"{server.url}/view?page={page}&page_size=1000")
        assert status == 200, body
        events.extend(body["events"])
        if page >= body["total_pages"]:
            return events
    raise AssertionError(f"more than {PAGES_MAX} pages of events on {server.url}")


class StoredSince:
    """The ids a shared server held when the test began; `events()` and `ids()` are the ones
    stored since.

    Made once the earlier tests' senders are done (their clients closed, their scripts ended):
    whatever they sent is drained into the store first, so none of it counts as the test's.
    """

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        server.wait_drained()
        self.before = {event["id"] for event in stored_events(server)}

    def events(self) -> list[dict[str, Any]]:
        """Every event stored since, as /view shows it, once per stored row."""
        return [event for event in stored_events(self.server) if event["id"] not in self.before]

    def ids(self) -> list[str]:
        """Every id stored since, once per stored row (a duplicate shows twice)."""
        return [event["id"] for event in self.events()]
