"""The error hierarchy: every error Tlytics raises on purpose has one home, `tlytics.errors`,
and is re-exported where callers already import it from."""

from __future__ import annotations

import tlytics
import tlytics.client
import tlytics.client.client
import tlytics.client.sender
from tlytics import errors


def test_client_errors_live_in_errors_and_keep_their_old_names() -> None:
    assert errors.EventsRejected is tlytics.EventsRejected is tlytics.client.EventsRejected
    assert errors.EventsRejected is tlytics.client.client.EventsRejected is tlytics.client.sender.EventsRejected
    assert issubclass(errors.EventsRejected, errors.DeliveryError)
    rejected = errors.EventsRejected("refused", status=400, events=[{"key": "k"}])
    assert (rejected.status, rejected.events, str(rejected)) == (400, [{"key": "k"}], "refused")


def test_every_error_descends_from_the_root_and_says_what_it_is() -> None:
    classes = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert len(classes) >= 8
    for error in classes:
        assert issubclass(error, errors.TlyticsError), error
        assert error.__doc__ and error.__module__ == "tlytics.errors", error
