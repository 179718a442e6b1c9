"""How `tlytics-replay` sends: each batch is first looked up (`POST /lookup`: which ids the
server already stores), then the rest posted to `/batch`, in requests the server takes.

A server refuses a request over its `--max-events` or `--max-body` with a 413 carrying the
`limit` it enforces. The sender learns that limit and cuts every later request to it, instead
of halving each batch again from the top (which costs a refused request per halving, for every
batch). An answer that names no limit (a proxy's 413) halves the request, down to one event;
a 413 naming one event (`index`: over `--max-event-size`) sets that event aside.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from tlytics.client.transport import Outcome, Reply, Transport, backoff_delay_s, classify, retry_after_s
from tlytics.errors import DeliveryError, LimitOf, stated_limit
from tlytics.replay_read import Found, Summary, canonical_id, json_bytes

SEND_ATTEMPTS = 5
# {"events":[ ... ]} around the events, and a comma between two.
_BATCH_FRAME_BYTES = len(b'{"events":[]}')


@dataclass
class Item:
    """An event to send and its JSON text (made once, measured for the body limit)."""

    found: Found
    text: bytes


def batch_body(items: list[Item]) -> bytes:
    return b'{"events":[' + b",".join(item.text for item in items) + b"]}"


def batch_body_bytes(items: list[Item]) -> int:
    return _BATCH_FRAME_BYTES + sum(len(item.text) for item in items) + max(len(items) - 1, 0)


@dataclass
class ServerLimits:
    """What the server's 413 answers taught: the most events, and the most body bytes, it takes
    in one request (None until a 413 said)."""

    max_events: int | None = None
    max_body_bytes: int | None = None

    def learn(self, limit: int, events: int, body_bytes: int, limit_of: LimitOf | None = None) -> None:
        """Learn from a 413 for a request of `events` events and `body_bytes` bytes.

        The answer's `limit` does not say its unit; what was sent does. A body within `limit`
        bytes was refused for its event count; `events` within `limit` for its bytes. When
        both exceed it, a count is assumed: if the limit was in bytes after all, `limit` events
        are still more than `limit` bytes, that request is refused too, and the second answer
        settles it (one refused request, where assuming bytes wrongly would send requests far
        smaller than needed for the whole replay). A server that says what its limit counts
        (`limit_of`, since 2026-12) is taken at its word; a per-event limit says nothing about
        requests."""
        if limit_of == "bytes_per_event":
            return
        if limit_of == "bytes_per_body":
            self.max_body_bytes = min(limit, self.max_body_bytes or limit)
            return
        if limit_of == "events_per_request":
            self.max_events = min(limit, self.max_events or limit)
            return
        if body_bytes > limit and events <= limit:
            self.max_body_bytes = min(limit, self.max_body_bytes or limit)
        else:
            self.max_events = min(limit, self.max_events or limit)

    def description(self) -> str:
        said = []
        if self.max_events is not None:
            said.append(f"{self.max_events} events")
        if self.max_body_bytes is not None:
            said.append(f"{self.max_body_bytes} bytes")
        return " and ".join(said)

    def cut(self, items: list[Item]) -> list[list[Item]]:
        """`items` in order, in requests within the known limits (an event alone over the
        byte limit is a request of its own: the server's answer says what is wrong with it)."""
        requests: list[list[Item]] = []
        current: list[Item] = []
        current_bytes = _BATCH_FRAME_BYTES
        for item in items:
            adding = len(item.text) + (1 if current else 0)
            full = self.max_events is not None and len(current) >= self.max_events
            too_big = self.max_body_bytes is not None and current_bytes + adding > self.max_body_bytes
            if current and (full or too_big):
                requests.append(current)
                current, current_bytes = [], _BATCH_FRAME_BYTES
                adding = len(item.text)
            current.append(item)
            current_bytes += adding
        if current:
            requests.append(current)
        return requests


@dataclass
class _Request:
    items: list[Item]
    # Already looked up: what is left of a request after /lookup is not asked about again.
    looked_up: bool = False


class Replayer:
    """Sends batches to /batch (with the write key) after asking /lookup (with the read key,
    or the write key when none is given) which ids the server already stores."""

    def __init__(
        self, writes: Transport, reads: Transport, summary: Summary, *, max_retry_delay_s: float = 10.0
    ) -> None:
        self._writes = writes
        self._reads = reads
        self._summary = summary
        self._max_retry_delay_s = max_retry_delay_s
        self._lookup_usable = True
        self.limits = ServerLimits()

    def _request(self, transport: Transport, path: str, body: bytes) -> Reply:
        """POST with retries on connection errors and retryable answers; returns the reply."""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            reply = None  # a Retry-After is only this attempt's to give
            try:
                reply = transport.request("POST", path, body)
            except DeliveryError as exc:
                last = str(exc)
            else:
                if classify(reply.status) is not Outcome.RETRY:
                    return reply
                last = f"server answered {reply.status}"
            if attempt < SEND_ATTEMPTS:
                asked = retry_after_s(reply.headers.get("retry-after")) if reply is not None else None
                time.sleep(
                    asked if asked is not None else backoff_delay_s(attempt, max_delay_s=self._max_retry_delay_s)
                )
        raise DeliveryError(f"gave up after {SEND_ATTEMPTS} attempts: {last}")

    def _stop_looking_up(self, warning: str) -> None:
        """From now on send every event: the ids still dedupe, but the count is unknown."""
        self._lookup_usable = False
        self._summary.already_stored = None
        self._summary.warning = f"warning: {warning}; sending every event, already stored unknown"

    def _lookup(self, ids: list[str]) -> Reply | None:
        """/lookup's reply for `ids`; None once asking is known to be useless."""
        if not self._lookup_usable:
            return None
        return self._request(self._reads, "/lookup", orjson.dumps({"ids": ids}))

    def _stored(self, reply: Reply | None) -> set[str]:
        """Which ids the server stores (canonical form) by /lookup's reply; empty once that is
        unknowable."""
        if reply is None:
            return set()
        answer = reply.json()
        if reply.status == 200 and isinstance(answer, dict) and isinstance(answer.get("present"), list):
            return {canonical_id(event_id) for event_id in answer["present"]}
        if reply.status in (401, 403):
            self._stop_looking_up(
                "the server refused the read key given to check which events it already stores (/lookup)"
                if self._reads is not self._writes
                else "the server needs a read key to tell which events it already stores (/lookup):"
                " give --read-key or TLYTICS_READ_KEYS"
            )
        elif reply.status in (404, 405):
            self._stop_looking_up("the server cannot tell which events it already stores (no /lookup)")
        else:
            self._stop_looking_up(f"/lookup answered {reply.status}: {answer}")
        return set()

    def send(self, batch: list[Found]) -> None:
        """Send one batch of the source, in as many requests as the server's limits need."""
        items = [Item(found, json_bytes(found.event)) for found in batch]
        waiting = deque(_Request(request) for request in self.limits.cut(items))
        while waiting:
            request = waiting.popleft()
            smaller = self._send_request(request)
            waiting.extendleft(reversed(smaller))

    def _send_request(self, request: _Request) -> list[_Request]:
        """Send one request; what it had to be cut into when the server found it too large."""
        summary = self._summary
        pending = request.items
        if not request.looked_up:
            ids = [item.found.event["id"] for item in pending]
            try:
                reply = self._lookup(ids)
            except DeliveryError as exc:
                summary.failed += len(pending)
                summary.problems.append(f"lookup failed: {exc}")
                return []
            if reply is not None and reply.status == 413:
                return self._smaller(pending, reply, len(orjson.dumps({"ids": ids})), looked_up=False)
            stored = self._stored(reply)
            kept = [item for item in pending if canonical_id(item.found.event["id"]) not in stored]
            if summary.already_stored is not None:
                summary.already_stored += len(pending) - len(kept)
            pending = kept
        while pending:
            try:
                reply = self._request(self._writes, "/batch", batch_body(pending))
            except DeliveryError as exc:
                summary.failed += len(pending)
                summary.problems.append(f"{len(pending)} events not delivered: {exc}")
                return []
            if classify(reply.status) is Outcome.DELIVERED:
                summary.sent += len(pending)
                return []
            answer = reply.json()
            index = answer.get("index") if isinstance(answer, dict) else None
            if isinstance(index, int) and 0 <= index < len(pending):
                rejected = pending.pop(index)
                summary.failed += 1
                summary.problems.append(f"{rejected.found.where}: rejected by the server: {answer.get('error')}")
                continue
            if reply.status == 413 and len(pending) > 1:
                return self._smaller(pending, reply, batch_body_bytes(pending), looked_up=True)
            summary.failed += len(pending)
            summary.problems.append(f"{len(pending)} events rejected with {reply.status}: {answer}")
            return []
        return []

    def _smaller(self, items: list[Item], reply: Reply, body_bytes: int, *, looked_up: bool) -> list[_Request]:
        """`items` cut to what the 413 `reply` says the server takes; halves when it says no
        limit, or one that would not make the request smaller."""
        answer = reply.json()
        stated = stated_limit(answer)
        if stated is not None:
            self.limits.learn(stated[0], len(items), body_bytes, stated[1])
        pieces = self.limits.cut(items)
        if len(pieces) == 1 and len(items) > 1:
            middle = len(items) // 2
            pieces = [items[:middle], items[middle:]]
        elif len(pieces) == 1:
            self._summary.failed += 1
            self._summary.problems.append(f"{items[0].found.where}: too large for the server: {_error_of(answer)}")
            return []
        return [_Request(piece, looked_up) for piece in pieces]


def _error_of(answer: Any) -> Any:
    return answer.get("error") if isinstance(answer, dict) else answer
