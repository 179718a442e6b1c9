"""What the client does to each event between `emit()` and the spool: `default_data` merged
in, then the application's `before_send` hook (scrubbing, sampling, enrichment)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tlytics.client.config import Event
from tlytics.errors import TlyticsError


class BeforeSendFailed(TlyticsError):
    """`Config.before_send` raised or returned something else than an Event or None; the
    event was dropped rather than sent unscrubbed."""

    def __init__(self, message: str, *, event_id: str, key: str) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.key = key


def with_default_data(default_data: Mapping[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """`data` on top of `default_data`: the event's own values win."""
    merged = dict(default_data)
    merged.update(data)
    return merged


def run_before_send(hook: Callable[[Event], Event | None], event: Event) -> Event | None:
    """The hook's answer for `event`: an Event to record, or None to drop it. Raises
    TypeError when the hook answers something else (its own exceptions propagate)."""
    result = hook(event)
    if result is not None and not isinstance(result, Event):
        raise TypeError(f"before_send must return an Event or None, not {type(result).__name__}")
    return result
