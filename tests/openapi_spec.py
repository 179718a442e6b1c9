"""openapi.json as the tests read it: its operations, their query parameters, and JSON Schemas
(OpenAPI 3.0's dialect turned into plain JSON Schema, strict about undocumented fields) that
jsonschema-rs (schemathesis's validator, already installed) can check a live answer against."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema_rs

import tlytics.ingest

SPEC_PATH = Path(tlytics.ingest.__file__).parent / "openapi.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text())
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    """Every documented operation by (METHOD, path)."""
    return {
        (method.upper(), path): operation
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def resolve(node: Any) -> Any:
    """`node` with every local `$ref` replaced by what it points to (the spec has no cycles)."""
    if isinstance(node, list):
        return [resolve(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return resolve(target)
    return {name: resolve(value) for name, value in node.items()}


def query_parameters(operation: dict[str, Any], path: str) -> set[str]:
    """The names of the query parameters documented for `operation` (and for its whole path)."""
    shared = SPEC["paths"][path].get("parameters", [])
    parameters = resolve([*shared, *operation.get("parameters", [])])
    return {parameter["name"] for parameter in parameters if parameter["in"] == "query"}


def strict_schema(schema: Any, *, closed: bool = True, in_composition: bool = False) -> Any:
    """OpenAPI 3.0 to JSON Schema: `nullable` becomes a null type. `closed`: an object that
    lists its properties and says nothing of others allows no others (an answer field the
    document does not name is a finding), except inside allOf, whose parts each see only some
    fields."""
    if isinstance(schema, list):
        return [strict_schema(item, closed=closed, in_composition=in_composition) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {
        name: strict_schema(value, closed=closed, in_composition=name == "allOf")
        if name in ("allOf", "anyOf", "oneOf", "items", "not", "additionalProperties")
        else {field: strict_schema(sub, closed=closed) for field, sub in value.items()}
        if name == "properties"
        else value
        for name, value in schema.items()
    }
    if converted.pop("nullable", False):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    if closed and "properties" in converted and "additionalProperties" not in converted and not in_composition:
        converted["additionalProperties"] = False
    return converted


def request_schema(method: str, path: str) -> dict[str, Any]:
    """The JSON Schema of an operation's JSON request body, as documented (open objects stay open)."""
    body = operations()[(method, path)]["requestBody"]["content"]["application/json"]["schema"]
    return dict(strict_schema(resolve(body), closed=False))


def answer_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    """The strict JSON Schema of the JSON answer `status` of an operation; None when the
    operation documents that status without a JSON body. A status it does not document at
    all fails the test calling this, naming the operation."""
    responses = operations()[(method, path)]["responses"]
    assert str(status) in responses, f"openapi.json: {method} {path} does not document the answer {status}"
    response = resolve(responses[str(status)])
    content = response.get("content", {}).get("application/json")
    if content is None:
        return None
    return dict(strict_schema(copy.deepcopy(content["schema"])))


def answer_problems(method: str, path: str, status: int, body: Any) -> list[str]:
    """Where `body` (the JSON answer `status` of method path) breaks its documented schema: each
    problem names the operation, the place in the body and what is wrong."""
    schema = answer_schema(method, path, status)
    if schema is None:
        return [f"{method} {path} {status}: openapi.json documents no JSON body, the server sent one"]
    return [f"{method} {path} {status} {problem}" for problem in schema_problems(schema, body)]


def schema_problems(schema: dict[str, Any], body: Any) -> list[str]:
    """Where `body` breaks the JSON Schema `schema`, each place and what is wrong (a field the
    schema does not name: document it in openapi.json, or stop sending it)."""
    validator = jsonschema_rs.Draft202012Validator(schema)
    return [
        f"at /{'/'.join(map(str, error.instance_path))}: {error.message}"
        + (
            " (openapi.json does not document it)"
            if "were unexpected" in error.message or "was unexpected" in error.message
            else ""
        )
        for error in validator.iter_errors(body)
    ]
