"""Every read endpoint against arbitrary parameters (hypothesis, a real server): text of any
kind, numbers far past 64 bits, negative numbers, repeated parameters. A client's mistake is a
JSON 4xx naming what is wrong; nothing is ever a 5xx."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import ServerProcess, http_json

HUGE = st.integers(min_value=2**63 - 2, max_value=10**40) | st.integers(max_value=-(2**63) + 2, min_value=-(10**40))
NUMBERS = st.integers() | HUGE | st.floats(allow_nan=True, allow_infinity=True)
# 1,000 digits: six such parameters still fit the HTTP layer's 8 KiB request line (a longer
# line is refused before any handler runs: see test_an_over_long_request_line_is_a_4xx).
NUMBER_TEXT = NUMBERS.map(str) | st.sampled_from(["1e400", "-0", "0x10", "1_000", "٣", " 7 ", "+5", "", "9" * 1000])
TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00+14:00",
        "2025-08-25T10:00:00Z",
        "2025-02-30T00:00:00Z",
        "yesterday",
        "0000-12-31T00:00:00Z",
    ]
) | st.text(max_size=30)
PATHS = st.sampled_from(["data.a", "data.flag", "data.n.m", "data.", "a", "data.a-b_c", ""]) | st.text(max_size=12)
VALUES = (
    NUMBER_TEXT
    | st.sampled_from(["true", "false", "null", '"1"', '"', '"\\u0000"', '"\\ud800"'])
    | st.text(max_size=40)
)
OPERATORS = st.sampled_from([":", "!=", ">", ">=", "<", "<=", "~", ":*", "=", "!"])
WHERE = st.builds(lambda path, op, value: f"{path}{op}{value}", PATHS, OPERATORS, VALUES) | st.text(max_size=40)
CURSOR = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=80) | st.builds(
    lambda ts, hex_id: __import__("base64").urlsafe_b64encode(f"{ts}:{hex_id}".encode()).decode(),
    NUMBERS,
    st.sampled_from(["00" * 16, "zz", "", "00" * 17]),
)
ANY_TEXT = st.text(max_size=40)

PARAMETERS: dict[str, st.SearchStrategy[str]] = {
    "page": NUMBER_TEXT | ANY_TEXT,
    "page_size": NUMBER_TEXT | ANY_TEXT,
    "limit": NUMBER_TEXT | ANY_TEXT,
    "key": ANY_TEXT,
    "since": TIMES,
    "until": TIMES,
    "where": WHERE,
    "order": st.sampled_from(["asc", "desc"]) | ANY_TEXT,
    "cursor": CURSOR,
    "format": st.sampled_from(["ndjson", "csv"]) | ANY_TEXT,
    "interval": st.sampled_from(["minute", "hour", "day", "week", "month"]) | ANY_TEXT,
    "tz": st.sampled_from(["UTC", "Europe/Paris", "Pacific/Kiritimati", "Etc/GMT+12", "../etc", "America"]) | ANY_TEXT,
    "unique": PATHS,
    "breakdown": PATHS,
    "compare": st.sampled_from(["previous", ""]) | ANY_TEXT,
    "steps": st.sampled_from(["k0,k1", "k1,k0,k1", ",", "k0"]) | ANY_TEXT,
    "by": PATHS,
    "within": st.sampled_from(["7d", "0d", "1s", "9999999w", "3 h"]) | NUMBER_TEXT | ANY_TEXT,
}
QUERIES = st.lists(st.tuples(st.sampled_from(sorted(PARAMETERS)), st.data()), max_size=6)
ENDPOINTS = [
    ("GET", "/view"),
    ("GET", "/export"),
    ("GET", "/stats"),
    ("GET", "/keys"),
    ("GET", "/funnel"),
    ("DELETE", "/events"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("fuzz") / "fuzz.db", flush="50ms").start()
    events = [
        {
            "key": f"k{n % 4}",
            "timestamp": f"2025-08-25T10:{n % 60:02d}:00Z",
            "data": {"a": [n, str(n), n % 2 == 0, None][n % 4], "n": {"m": n}, "flag": n % 3 == 0},
        }
        for n in range(200)
    ]
    assert http_json("POST", server.url + "/events", events)[0] == 200
    server.wait_drained()
    yield server
    server.kill()


def request(server: ServerProcess, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Content-Type") or ""
    finally:
        connection.close()


def assert_answered(status: int, body: bytes, content_type: str, what: str) -> None:
    assert status < 500, f"{what}: {status} {body[:500]!r}"
    if status >= 400:
        assert content_type.startswith("application/json"), what
        answer = json.loads(body)
        assert isinstance(answer["error"], str) and answer["error"], what
        if status == 400:
            assert "field" in answer or "index" in answer or "position" in answer, f"{what}: {answer}"


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(endpoint=st.sampled_from(ENDPOINTS), chosen=QUERIES)
def test_read_parameters_never_give_a_server_error(
    server: ServerProcess, endpoint: tuple[str, str], chosen: list[Any]
) -> None:
    method, path = endpoint
    pairs = [(name, data.draw(PARAMETERS[name])) for name, data in chosen]
    query = "&".join(f"{quote(name)}={quote(value, safe='', errors='surrogatepass')}" for name, value in pairs)
    status, body, content_type = request(server, method, f"{path}?{query}" if query else path)
    assert_answered(status, body, content_type, f"{method} {path}?{query[:300]}")


LOOKUP_BODIES = st.recursive(
    st.none()
    | st.booleans()
    | NUMBERS.filter(lambda n: isinstance(n, int) and abs(n) < 2**63)
    | st.text(max_size=40)
    | st.uuids().map(str),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(["ids", "x"]) | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    payload=LOOKUP_BODIES
    | st.fixed_dictionaries({"ids": st.lists(st.uuids().map(str) | st.text(max_size=40), max_size=5)}),
    raw=st.none()
    | st.binary(max_size=60)
    | st.sampled_from([b'{"ids": [1e400]}', b'{"ids": [99999999999999999999999]}']),
)
def test_lookup_bodies_never_give_a_server_error(server: ServerProcess, payload: Any, raw: bytes | None) -> None:
    body = raw if raw is not None else json.dumps(payload).encode()
    status, answer, content_type = request(server, "POST", "/lookup", body)
    assert_answered(status, answer, content_type, f"POST /lookup {body[:200]!r}")


def test_the_server_is_still_healthy_after_the_fuzzing(server: ServerProcess) -> None:
    status, health = http_json("GET", server.url + "/health")
    assert status == 200 and health["problems"] == [], health
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" for line in lines), "the server logs a JSON line per request"
    failed = [line for line in lines if line.get("status") == 500 or "exception" in line]
    assert failed == [], failed[:3]


def test_an_over_long_request_line_is_a_4xx(server: ServerProcess) -> None:
    # aiohttp's parser refuses request lines over 8,190 bytes with its own plain-text 400,
    # before our middleware: a refusal, never a 5xx, and nothing is read.
    status, _, _ = request(server, "GET", "/view?limit=" + "9" * 20_000)
    assert 400 <= status < 500
