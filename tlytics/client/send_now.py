"""emit_and_send()'s delivery: one event sent in the caller's thread, on a transport of its
own (the sender's may be busy with a backlog), and answered there: acknowledged, refused for
good, or not acknowledged (the caller then keeps it spooled for the sender; the event's id
makes a second delivery harmless)."""

from __future__ import annotations

from dataclasses import dataclass

from tlytics.client.config import Config
from tlytics.client.connect import transport_for
from tlytics.client.delivery import LearnedLimits, SenderStats, deliver_entries
from tlytics.client.forksafe import ForkSafeSpool
from tlytics.client.prepare import Prepared, entry_bytes
from tlytics.client.transport import Outcome, classify
from tlytics.errors import DeliveryError, TlyticsError


@dataclass(frozen=True, slots=True)
class SentNow:
    """What the server made of one event sent now."""

    acknowledged: bool
    # The server acknowledged the request but refused this event for good (set aside).
    rejected: TlyticsError | None = None
    # Why it was not acknowledged, for the caller's DeliveryError.
    status: str = ""


def send_now(
    config: Config, prepared: Prepared, dead_letter: ForkSafeSpool, stats: SenderStats, limits: LearnedLimits
) -> SentNow:
    """Deliver `prepared` alone, now; never raises for the network (see SentNow)."""
    transport = transport_for(config)
    rejected: list[TlyticsError] = []
    try:
        reply = deliver_entries(transport, [entry_bytes([prepared])], dead_letter, rejected.append, stats, limits)
    except DeliveryError:
        reply = None
    finally:
        transport.close()
    if reply is not None and classify(reply.status) is Outcome.DELIVERED:
        return SentNow(acknowledged=True, rejected=rejected[0] if rejected else None)
    return SentNow(acknowledged=False, status="no answer" if reply is None else f"answer {reply.status}")
