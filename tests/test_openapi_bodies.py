"""The request bodies openapi.json documents, field by field against the rules that check them:
the event schema against `tlytics.events` (its fields, the one required, the key's length), and
for every write route, live: a body without any one of its fields is refused by the server
exactly when the documented schema refuses it, so a field the handler requires is required in
the document too, and the other way round."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.openapi_spec import SPEC, request_schema, resolve, schema_problems
from tests.test_openapi_complete import PROBES
from tlytics.events import KEY_MAX_CHARS, KNOWN_FIELDS
from tlytics.ingest.capture_common import ERROR_CODES
from tlytics.ingest.lookup import LOOKUP_MAX_IDS

FULL_EVENT = {
    "key": "signup",
    "id": "0190f0f0-0000-7000-8000-000000000001",
    "timestamp": "2026-01-01T00:00:00Z",
    "data": {"user": "u1"},
}
# Every write route's body from PROBES, and bodies with the optional fields and other shapes.
BODIES: list[tuple[str, Any]] = [
    *((path, body) for (method, path), (_, body) in PROBES.items() if method == "POST"),
    ("/events", [FULL_EVENT]),
    ("/batch", {"events": [FULL_EVENT]}),
    ("/v1/track", {"anonymousId": "a1", "event": "signup", "messageId": "m1", "timestamp": "2026-01-01T00:00:00Z"}),
    ("/v1/identify", {"anonymousId": "a1", "traits": {"plan": "pro"}}),
    ("/v1/batch", {"batch": [{"type": "group", "userId": "u1", "groupId": "g1"}]}),
    ("/v1/batch", {"batch": [{"type": "alias", "userId": "u1", "previousId": "a1"}]}),
    ("/capture/", {"event": "signup", "properties": {"distinct_id": "u1"}}),
    ("/capture/", {"event": "signup", "distinct_id": "u1", "uuid": "0190f0f0-0000-7000-8000-000000000002"}),
    ("/batch/", {"batch": [{"event": "signup", "distinct_id": "u1"}], "sent_at": "2026-01-01T00:00:00Z"}),
]


def _without_each_field(body: Any, trail: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(where, body without that field) for every field of the body's objects: its own, its
    first element's, and theirs in turn (a batch's first event, an event's properties)."""
    if isinstance(body, list) and body:
        for where, first in _without_each_field(body[0], (*trail, "0")):
            yield where, [first, *body[1:]]
    elif isinstance(body, dict):
        for name, value in body.items():
            yield "/".join((*trail, name)), {other: body[other] for other in body if other != name}
            for where, inner in _without_each_field(value, (*trail, name)):
                yield where, {**body, name: inner}


@pytest.mark.parametrize(("path", "body"), BODIES, ids=[f"{path} {index}" for index, (path, _) in enumerate(BODIES)])
async def test_the_server_and_the_schema_agree_on_each_field_of_the_body(client: Any, path: str, body: Any) -> None:
    schema = request_schema("POST", path)
    response = await client.post(path, json=body)
    assert response.status == 200, await response.text()
    assert not schema_problems(schema, body), f"openapi.json refuses a body the server takes: {body}"
    problems = []
    for where, smaller in _without_each_field(body):
        response = await client.post(path, json=smaller)
        refused_by_server = response.status == 400
        refused_by_schema = bool(schema_problems(schema, smaller))
        if refused_by_server != refused_by_schema:
            problems.append(
                f"POST {path} without {where}: the server answers {response.status}, openapi.json's request schema"
                + (" refuses it" if refused_by_schema else f" takes it ({await response.text()})")
            )
    assert not problems, "\n".join(problems)


def test_the_event_schema_has_the_fields_and_limits_of_the_validation_rules() -> None:
    event = resolve(SPEC["components"]["schemas"]["EventIn"])
    assert set(event["properties"]) == KNOWN_FIELDS
    assert event["required"] == ["key"]  # tlytics.events.check_key: "key is required"
    assert event["additionalProperties"] is False  # normalize_event: "unknown field"
    assert event["properties"]["key"]["maxLength"] == KEY_MAX_CHARS
    assert event["properties"]["key"]["minLength"] == 1


def test_events_and_batch_take_events_as_the_validation_rules_do() -> None:
    events = request_schema("POST", "/events")
    assert events["type"] == "array"
    batch = request_schema("POST", "/batch")
    assert batch["type"] == "object"
    assert batch["required"] == ["events"]  # validation: '"events" must be a JSON array'
    assert batch["properties"]["events"] == events


def test_lookup_takes_at_most_the_ids_its_handler_does() -> None:
    lookup = request_schema("POST", "/lookup")
    assert lookup["required"] == ["ids"]
    assert lookup["properties"]["ids"]["maxItems"] == LOOKUP_MAX_IDS


def test_the_error_codes_of_the_sdk_routes_are_documented() -> None:
    code = SPEC["components"]["schemas"]["Error"]["properties"]["code"]
    assert set(code["enum"]) == {*ERROR_CODES.values(), "error"}  # "error": a status without a word
