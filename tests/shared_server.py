"""What a test needs on a server it shares with the other tests of its file (conftest's
`module_server_factory`): the events stored since the test began, so that it asserts on its
own events exactly as it would on a fresh server's, never on totals."""

from __future__ import annotations

from tests.helpers import ServerProcess


class StoredSince:
    """The ids a shared server held when the test began; `ids()` are the ones stored since.

    Made once the earlier tests' senders are done (their clients closed, their scripts ended):
    whatever they sent is drained into the store first, so none of it counts as the test's.
    """

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        server.wait_drained()
        self.before = set(server.stored_ids())

    def ids(self) -> list[str]:
        """Every id stored since, once per stored row (a duplicate shows twice)."""
        return [event_id for event_id in self.server.stored_ids() if event_id not in self.before]
