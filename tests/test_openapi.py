"""The OpenAPI contract: served at /openapi.json, covers every route, and a schemathesis run
against a live server finds no 5xx, no crash, and no answer that breaks the schema."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import ServerProcess, http_json
from tests.openapi_spec import SPEC, operations

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
EXAMPLES_PER_OPERATION = 30


async def test_openapi_is_served_and_documents_every_route(client: Any, app: web.Application) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    spec = await response.json()
    assert spec["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and not route.resource.canonical.startswith("/static/")  # the dashboard's files, not API
    }
    assert routes == documented


# The schemathesis run, in parts that pytest-xdist spreads over its workers: one run of all 27
# operations took five minutes on a busy machine on one worker, the tail of `make test`. Each
# part runs every phase with the same examples per operation over its own operations; each
# worker starts one server for all the parts it runs (as the single run had one for all).
# The parts keep together the operations whose inputs schemathesis reuses for one another
# (the Segment calls' userId/anonymousId/groupId, the PostHog calls' distinct_id), and are
# roughly even in cost (measured: the request bodies take most of the time).
SEGMENT_IDENTITY = ("/v1/identify", "/v1/group", "/v1/alias", "/v1/import")


def fuzz_part(method: str, path: str) -> str:
    """The part of the schemathesis run an operation belongs to; every operation has one."""
    if path.startswith("/v1/"):
        return "segment-identity" if path in SEGMENT_IDENTITY else "segment-events"
    if path in ("/capture/", "/batch/", "/e/", "/i/v0/e/"):
        return "posthog"
    if method == "GET":
        return "reads"
    return "writes"


FUZZ_PARTS = ("segment-events", "segment-identity", "posthog", "writes", "reads")


def part_operations(part: str) -> list[str]:
    """The operations of `part`, as schemathesis names them ("POST /events")."""
    return [f"{method} {path}" for method, path in operations() if fuzz_part(method, path) == part]


def test_the_fuzz_parts_cover_every_operation_once() -> None:
    named = [name for part in FUZZ_PARTS for name in part_operations(part)]
    assert sorted(named) == sorted(f"{method} {path}" for method, path in operations())
    assert all(part_operations(part) for part in FUZZ_PARTS), "a part with no operation"


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One live server for the parts this worker runs, as one for the whole run before."""
    server = ServerProcess(tmp_path_factory.mktemp("fuzzed") / "analytics.db", flush="100ms").start()
    yield server
    server.kill()


# A part takes a minute or two on a busy machine: more than the suite's default timeout,
# within the run's own (subprocess) limit.
@pytest.mark.timeout(660)
@pytest.mark.parametrize(
    "part", [pytest.param(part, marks=pytest.mark.xdist_group(f"schemathesis-{part}")) for part in FUZZ_PARTS]
)
def test_schemathesis_finds_no_server_error_or_schema_break(
    fuzzed_server: ServerProcess, tmp_path: Path, rng: random.Random, part: str
) -> None:
    selected_operations = part_operations(part)
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    completed = subprocess.run(
        [
            executable,
            "run",
            f"{fuzzed_server.url}/openapi.json",
            *(argument for name in selected_operations for argument in ("--include-name", name)),
            "--checks",
            CHECKS,
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
            # From the run's seed (conftest): the same cases again with TLYTICS_TEST_SEED.
            "--seed",
            str(rng.getrandbits(64)),
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    summary = completed.stdout[-3000:]
    print(summary)  # the run's size and seed, in the test log
    assert completed.returncode == 0, summary
    # The part really covered its operations: each one selected and tested, and a real number
    # of cases generated and passed (not a run that tested nothing). (Schemathesis's "of N
    # total" leaves GET /openapi.json out unless it is selected: the served document is
    # compared with openapi.json below.)
    selected = re.search(r"Selected: (\d+)/(\d+)", summary)
    tested = re.search(r"Tested: (\d+)", summary)
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert selected is not None and tested is not None and cases is not None, summary
    assert int(selected[1]) == int(tested[1]) == len(selected_operations), summary
    assert int(cases[1]) == int(cases[2]) >= 10 * int(tested[1]), summary
    status, health = http_json("GET", fuzzed_server.url + "/health")
    assert status == 200, health  # the fuzzing left the server healthy
    status, served = http_json("GET", fuzzed_server.url + "/openapi.json")
    assert status == 200 and served == SPEC, "the server fuzzed serves another document than openapi.json"
