"""tlytics-replay against a server's limits (--max-events, --max-body, events of 12 KB at the
default batch size): it cuts its requests to the `limit` the 413 names, remembers it for later
batches, and stores every event exactly once. And it reads its source as a stream: a 36 MB
file does not take hundreds of MB of memory. And a client spool_dir in either layout."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import ServerProcess
from tlytics.replay import main as replay
from tlytics.replay_read import Found
from tlytics.replay_send import Item, ServerLimits, batch_body, batch_body_bytes


def write_events(path: Path, count: int, *, data_bytes: int = 40) -> set[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    path.write_bytes(
        b"".join(
            orjson.dumps({"id": event_id, "key": "replayed", "data": {"n": n, "pad": "x" * data_bytes}}) + b"\n"
            for n, event_id in enumerate(ids)
        )
    )
    return set(ids)


def figures(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}


def refused_too_large(server: ServerProcess) -> float:
    """Requests answered 413, on any route (/lookup's included)."""
    return sum(
        value
        for name, value in figures(server).items()
        if name.startswith("tlytics_request_duration_seconds_count{") and 'status="413"' in name
    )


def batches_accepted(server: ServerProcess) -> float:
    return figures(server).get('tlytics_request_duration_seconds_count{method="POST",route="/batch",status="200"}', 0.0)


def assert_stored_exactly_once(server: ServerProcess, ids: set[str]) -> None:
    server.wait_drained(timeout_s=60)
    stored = server.stored_ids()
    assert len(stored) == len(ids) and set(stored) == ids


def test_max_events_is_learnt_from_the_first_413_and_kept_for_later_batches(
    server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(extra_args=["--max-events", "100"]).start()
    ids = write_events(tmp_path / "events.ndjson", 2500)

    result = CliRunner().invoke(replay, ["--server", server.url, "--file", str(tmp_path / "events.ndjson")])
    assert result.exit_code == 0, result.output
    assert "read 2500, sent 2500, already stored 0, invalid 0, failed 0" in result.stdout
    assert "the server takes at most 100 events per request" in result.stderr
    assert_stored_exactly_once(server, ids)
    # One refused request taught the limit: the first of three batches of 1000, not each one
    # halved from the top again (1000 → 500 → 250 → 125 → 62: four refusals per batch).
    assert refused_too_large(server) == 1
    assert batches_accepted(server) == 25

    again = CliRunner().invoke(replay, ["--server", server.url, "--file", str(tmp_path / "events.ndjson")])
    assert again.exit_code == 0, again.output
    assert "read 2500, sent 0, already stored 2500, invalid 0, failed 0" in again.stdout


def test_max_body_is_learnt_for_lookups_and_batches(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(extra_args=["--max-body", "20KiB"]).start()
    ids = write_events(tmp_path / "events.ndjson", 1500, data_bytes=150)

    result = CliRunner().invoke(replay, ["--server", server.url, "--file", str(tmp_path / "events.ndjson")])
    assert result.exit_code == 0, result.output
    assert "read 1500, sent 1500, already stored 0, invalid 0, failed 0" in result.stdout
    assert f"the server takes at most {20 * 1024} bytes per request" in result.stderr
    assert_stored_exactly_once(server, ids)
    assert refused_too_large(server) == 1  # the first lookup of 1000 ids; never a batch


def test_events_of_12_kb_at_the_default_batch_size(server_factory: Any, tmp_path: Path) -> None:
    """1,000 events of 12 KB are 12 MB: over the default --max-body of 10 MiB."""
    server = server_factory().start()
    ids = write_events(tmp_path / "big.ndjson", 1200, data_bytes=12 * 1024)

    result = CliRunner().invoke(replay, ["--server", server.url, "--file", str(tmp_path / "big.ndjson")])
    assert result.exit_code == 0, result.output
    assert "read 1200, sent 1200, already stored 0, invalid 0, failed 0" in result.stdout
    assert_stored_exactly_once(server, ids)
    assert refused_too_large(server) == 1


def test_an_event_over_the_event_size_limit_fails_alone(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(extra_args=["--max-events", "10", "--max-event-size", "2KiB"]).start()
    events_file = tmp_path / "events.ndjson"
    ids = write_events(events_file, 30)
    with events_file.open("ab") as stream:
        stream.write(orjson.dumps({"key": "huge", "data": {"pad": "y" * 4096}}) + b"\n")

    result = CliRunner().invoke(replay, ["--server", server.url, "--file", str(events_file)])
    assert result.exit_code == 1
    assert "read 31, sent 30, already stored 0, invalid 0, failed 1" in result.stdout
    assert f"{events_file}:31: rejected by the server" in result.stderr
    assert_stored_exactly_once(server, ids)


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=60),
    max_events=st.none() | st.integers(min_value=1, max_value=20),
    max_body_bytes=st.none() | st.integers(min_value=1, max_value=2000),
)
def test_cut_keeps_every_event_in_order_within_the_limits(
    sizes: list[int], max_events: int | None, max_body_bytes: int | None
) -> None:
    items = [Item(Found(str(n), {}), b"x" * size) for n, size in enumerate(sizes)]
    requests = ServerLimits(max_events, max_body_bytes).cut(items)
    assert [item for request in requests for item in request] == items
    for request in requests:
        assert request, "no empty request"
        assert batch_body_bytes(request) == len(batch_body(request))
        if len(request) > 1:
            assert max_events is None or len(request) <= max_events
            assert max_body_bytes is None or batch_body_bytes(request) <= max_body_bytes


def test_a_limit_of_unknown_unit_is_settled_by_what_was_sent() -> None:
    limits = ServerLimits()
    limits.learn(100, events=1000, body_bytes=90)  # the body was within 100 bytes: a count
    assert (limits.max_events, limits.max_body_bytes) == (100, None)
    limits = ServerLimits()
    limits.learn(20_000, events=1000, body_bytes=50_000)  # 1000 events are within 20,000
    assert (limits.max_events, limits.max_body_bytes) == (None, 20_000)
    limits = ServerLimits()
    limits.learn(100, events=1000, body_bytes=50_000)  # either: a count first, then...
    assert (limits.max_events, limits.max_body_bytes) == (100, None)
    limits.learn(100, events=100, body_bytes=5_000)  # ...100 events still refused: bytes
    assert (limits.max_events, limits.max_body_bytes) == (100, 100)


def test_a_limit_whose_unit_the_server_states_is_taken_at_its_word() -> None:
    """`limit_of` in the 413 decides, where guessing from what was sent would go wrong."""
    limits = ServerLimits()
    limits.learn(100, events=1000, body_bytes=50_000, limit_of="bytes_per_body")  # a guess says count
    assert (limits.max_events, limits.max_body_bytes) == (None, 100)
    limits = ServerLimits()
    limits.learn(20_000, events=1000, body_bytes=50_000, limit_of="events_per_request")  # a guess says bytes
    assert (limits.max_events, limits.max_body_bytes) == (20_000, None)
    limits = ServerLimits()
    limits.learn(1000, events=10, body_bytes=50_000, limit_of="bytes_per_event")  # one event: no request limit
    assert (limits.max_events, limits.max_body_bytes) == (None, None)


# Peak memory of `tlytics-replay --dry-run` on the file; run in a process of its own, so the
# peak is the replay's alone.
_PEAK_RSS_SCRIPT = """
import resource, subprocess, sys
completed = subprocess.run(sys.argv[1:], capture_output=True)
sys.stdout.write(completed.stdout.decode())
print("peak_rss_kib", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_a_36_mb_file_is_read_as_a_stream(tmp_path: Path) -> None:
    """The whole file was parsed into memory before the first request (measured before the
    fix: 336 MB of RSS for a 36 MB file of 160k page views, about 590 MB for this one). Now
    only each id and a digest of each event stay."""
    events_file = tmp_path / "large.ndjson"
    with events_file.open("wb") as stream:
        size = n = 0
        while size < 36 * 1024 * 1024:
            # Many short strings: cheap to validate (a quick test), dear to hold in memory.
            tags = [f"{tag:02x}" for tag in range(n % 7, 200)]
            line = orjson.dumps({"id": str(uuid.uuid4()), "key": "page_view", "data": {"n": n, "tags": tags}})
            stream.write(line + b"\n")
            size += len(line) + 1
            n += 1
    script = Path(sys.executable).with_name("tlytics-replay")
    completed = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_SCRIPT, str(script), "--dry-run", "--file", str(events_file)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert f"dry run: read {n}, valid {n}, invalid 0" in completed.stdout, completed.stdout
    peak_mib = int(completed.stdout.split("peak_rss_kib")[1]) / 1024
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB for a 36 MB file"


def _client_spool_entry(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(events)


def test_a_client_spool_dir_in_either_layout(server_factory: Any, tmp_path: Path) -> None:
    """One queue/ for the whole spool_dir (up to now), or a subdirectory per destination each
    with its queue/ (one spool per server URL and write key); dead letters are left alone."""
    from tlytics.spool import Spool

    server = server_factory().start()
    spool_dir = tmp_path / "spool"
    ids: set[str] = set()
    for queue_dir in (spool_dir / "queue", spool_dir / "a1b2c3" / "queue", spool_dir / "d4e5f6" / "queue"):
        spool = Spool(queue_dir)
        events = [{"id": str(uuid.uuid4()), "key": "spooled", "data": {"n": n}} for n in range(30)]
        spool.append(_client_spool_entry(events))
        spool.close()
        ids |= {str(event["id"]) for event in events}
    dead = Spool(spool_dir / "a1b2c3" / "dead-letter")
    dead.append(orjson.dumps({"events": [{"key": "refused once"}], "reason": "400"}))
    dead.close()

    result = CliRunner().invoke(replay, ["--server", server.url, "--spool", str(spool_dir)])
    assert result.exit_code == 0, result.output
    assert "read 90, sent 90, already stored 0, invalid 0, failed 0" in result.stdout
    assert_stored_exactly_once(server, ids)
