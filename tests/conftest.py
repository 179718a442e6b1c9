"""Shared fixtures: an in-process app on a real loopback socket (pytest-aiohttp), and a real
`tlytics` subprocess for the tests that kill it."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import (
    ServerProcess,
)
from tests.postgres_cluster import postgres_cluster  # noqa: F401  (the session's PostgreSQL: a fixture)
from tests.shared_server import StoredSince
from tlytics.ingest import Settings, create_app
from tlytics.spool import Spool
from tlytics.store import SQLiteStore

SEED_VARIABLE = "TLYTICS_TEST_SEED"


def pytest_configure(config: pytest.Config) -> None:
    """One seed for the run's random choices (kill moments, flush periods, batch sizes): taken
    from TLYTICS_TEST_SEED to reproduce a failure, else chosen now. Put back in the environment,
    so that pytest-xdist's workers, started after this, use the same one."""
    if not os.environ.get(SEED_VARIABLE):
        os.environ[SEED_VARIABLE] = str(random.SystemRandom().randrange(2**32))


def run_seed() -> int:
    return int(os.environ[SEED_VARIABLE])


def pytest_report_header(config: pytest.Config) -> str:
    return f"random seed: {run_seed()} (reproduce with {SEED_VARIABLE}={run_seed()})"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """The test's random source: seeded from the run's seed and the test's id, so that one test
    run alone with TLYTICS_TEST_SEED makes the same choices as it did in the whole suite. The
    seed is attached to the test's report, and printed with its failure."""
    request.node.user_properties.append(("random seed", run_seed()))
    # Not the node id, which pytest-xdist's loadgroup suffixes with "@group".
    return random.Random(f"{run_seed()}:{request.node.path.name}::{request.node.name}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and any(name == "random seed" for name, _ in item.user_properties):
        report.sections.append(
            ("random seed", f"this test's random choices follow from {SEED_VARIABLE}={run_seed()}: rerun with it set")
        )


# Tests that time the server (a loop-stall bound, a latency): under pytest-xdist they share a
# worker, one after another, so that no two of them compete with each other for the machine.
TIMING_SENSITIVE = (
    "tests/test_loop_stall.py",
    "tests/test_capture_loop.py::test_health_answers_promptly_while_hostile_capture_bodies_arrive",
    "tests/test_body_work.py",
    "tests/test_faults.py::test_idle_and_slow_connections_do_not_stop_other_clients",
    "tests/test_client.py::test_server_outage_mid_stream_loses_and_duplicates_nothing",
)


# Files whose tests share no fixture wider than a function (each starts and kills its own
# servers) and together take a minute or more: each test is a group of its own, so that
# pytest-xdist runs them side by side instead of one file holding one worker for minutes.
SPREAD_BY_TEST = (
    "tests/test_durability.py",
    "tests/test_faults.py",
    "tests/test_nodes.py",
    "tests/test_properties.py",
    "tests/test_replay_limits.py",
    "tests/test_declared_properties.py",
    "tests/test_retention.py",
    "tests/test_spooled_rows.py",
    "tests/test_sdk_clients.py",
    "tests/test_roundtrip.py",
    "tests/test_store_contract.py",
    "tests/test_validation.py",
    "tests/test_workers.py",
    "tests/test_writer.py",
)

# Under pytest-xdist, the groups that take longest start first (longest-first scheduling): a
# long group started last is the run's tail, one worker busy while the others wait. Longest
# first, from `--durations=0` of a whole run summed per group (a group is ranked by the first
# entry it starts with); every other group follows in collection order (make test passes
# --no-loadscope-reorder, which would order groups by their number of tests instead).
LONGEST_FIRST = (
    "schemathesis-segment-identity",
    "tests/test_declared_properties.py::test_declared_answers_equal_undeclared_answers_on_postgresql",
    "schemathesis-posthog",
    "schemathesis-writes",
    "schemathesis-segment-events",
    "tests/test_properties.py::test_validation_is_total",
    "schemathesis-reads",
    "tests/test_middleware.py",
    "tests/test_client.py",
    "tests/test_dashboard.py",
    "tests/test_declared_properties.py::test_declared_answers_equal",
    "tests/test_client_process_models.py",
    "tests/test_preaggregates.py",
    "tests/test_postgres_preaggregates.py",
    "tests/test_postgres_declared_reads.py",
    "timing",
    "tests/test_faults.py::test_ten_random_sigkills",
    "tests/test_client_multiprocessing.py",
    "tests/test_access.py",
    "tests/test_tjs_browser.py",
    "tests/test_nodes.py::test_postgresql_stopped_mid_load",
    "tests/test_client_emit_plain_path.py",
    "tests/test_backend_agreement.py",
    "tests/test_read_fuzz.py",
    "tests/test_replay.py",
    "tests/test_read_budget.py",
    "tests/test_reading.py",
    "tests/test_workers.py::test_a_restart_with_fewer_workers",
    "tests/test_workers.py::test_events_posted_over_many_connections",
    "tests/test_docker.py",
    "tests/test_capture_loop.py",
    "tests/test_request_bodies.py",
    "tests/test_store_misconfigured.py",
    "tests/test_unique_sketches.py",
    "tests/test_clean_stop.py",
    "tests/test_workers.py::test_an_erasure_waits",
    "tests/test_store_postgres.py",
    "tests/test_properties.py::TestSpoolProperties",
    "tests/test_nodes.py::test_kill_9",
    "tests/test_client_spool_refused.py",
    "tests/test_replay_limits.py::test_a_36_mb_file",
    "tests/test_client_delivery.py",
    "tests/test_store_reconnect.py",
    "tests/test_workers.py::test_kill_9_of_the_writer",
    "tests/test_durability.py::test_a_group_signal",
    "tests/test_retention.py::test_an_erasure_that_cannot_drain",
    "tests/test_durability.py::test_repeated_kills",
    "tests/test_workers.py",
    "tests/test_writer.py::test_a_store_locked_at_start",
    "tests/test_roundtrip.py::test_what_the_server_accepts",
    "tests/test_store_contract.py",
    "tests/test_durability.py::test_clean_stop",
    "tests/test_nodes.py",
    "tests/test_sdk_clients.py::test_a_server_restart",
    "tests/test_durability.py",
    "tests/test_validation.py",
    "tests/test_writer.py",
)


def xdist_group(item: pytest.Item) -> str:
    """The group of a test under --dist loadgroup: its own `xdist_group` mark (a file whose
    tests are spread on purpose), else "timing" for the timing-sensitive tests, else the test
    itself in a SPREAD_BY_TEST file, else its file."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs["name"])
    if any(item.nodeid == name or item.nodeid.startswith(name + "::") for name in TIMING_SENSITIVE):
        return "timing"
    path = item.nodeid.split("::")[0]
    return item.nodeid if path in SPREAD_BY_TEST else path


def longest_first_rank(group: str) -> int:
    return next((rank for rank, name in enumerate(LONGEST_FIRST) if group.startswith(name)), len(LONGEST_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist loadgroup` (make test), a test file goes to one worker as a
    whole, so its module-scoped servers and browsers start once (SPREAD_BY_TEST files aside);
    the timing-sensitive tests go together to one worker; a test with an `xdist_group` mark of
    its own goes with its group. The longest groups are put first (LONGEST_FIRST)."""
    if config.getoption("dist", "no") == "no":
        return
    groups = {item.nodeid: xdist_group(item) for item in items}
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    items.sort(key=lambda item: longest_first_rank(groups[item.nodeid]))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A long flush period: tests decide when the writer drains (app_flush), so they can look
    # at the spool and the store in between.
    # The writer on a thread keeps these in-process tests fast; the subprocess servers (and
    # test_writer's process tests) run the default writer process.
    return Settings(db_path=tmp_path / "analytics.db", flush_period_s=3600.0, port=8081, writer_process=False)


@pytest.fixture
def make_app(settings: Settings) -> Callable[..., web.Application]:
    """An app factory: `make_app(max_events_per_request=5)` is the test app with those
    settings changed (the same tmp db, long flush period and writer thread otherwise)."""

    def make(**overrides: Any) -> web.Application:
        return create_app(dataclasses.replace(settings, **overrides))

    return make


@pytest.fixture
def open_store() -> Iterator[Callable[[Path], SQLiteStore]]:
    """Open a store on a path for the test to look into; every one is closed afterwards."""
    stores: list[SQLiteStore] = []

    def open_(path: Path) -> SQLiteStore:
        stores.append(SQLiteStore(path))
        return stores[-1]

    yield open_
    for store in stores:
        store.close()


@pytest.fixture
def open_spool() -> Iterator[Callable[[Path], Spool]]:
    """Open a spool directory for the test to look into; every one is closed afterwards."""
    spools: list[Spool] = []

    def open_(path: Path) -> Spool:
        spools.append(Spool(path))
        return spools[-1]

    yield open_
    for spool in spools:
        spool.close()


@pytest.fixture
async def app(settings: Settings) -> web.Application:
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> TestClient[Any, Any]:
    return await aiohttp_client(app)  # type: ignore[no-any-return]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[ServerProcess] = []

    def make(db_path: Path | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(db_path or tmp_path / "analytics.db", **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def _shared_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("shared-server") / "analytics.db")
    yield server
    server.kill()


@pytest.fixture
def shared_server(_shared_server_process: ServerProcess) -> ServerProcess:
    """A default server (`python -m tlytics`, no keys, 100 ms flush) shared by every test that
    only needs one running: started once per run (per pytest-xdist worker), since a server
    start costs more CPU than most such tests. A test that uses it sends only its own fresh
    ids and asserts on the ids stored since it began (`stored_since`), never on totals; it
    does not stop, kill, reconfigure or empty it. Started again if an earlier test's failure
    left it dead."""
    server = _shared_server_process
    if server.process is None or server.process.poll() is not None:
        server.start()
    return server


@pytest.fixture
def stored_since(shared_server: ServerProcess) -> StoredSince:
    """What `shared_server` stored since this test began."""
    return StoredSince(shared_server)
