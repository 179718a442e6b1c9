"""`tlytics-replay`: resend events left in a spool directory (a client's, or a server's) or an
NDJSON file (or stdin) to a server, in batches, with a progress bar and a summary.

Re-running it is harmless: events keep their ids, and a line without an id gets one derived
from its content, so the server's unique id dedupes a second run. Before each batch it asks
the server which ids it already stores (`POST /lookup`, which needs a read key when the
server has read keys), sends only the others, and counts those as "already stored". When it
cannot ask, it says so once, sends everything (the ids still dedupe) and reports "already
stored unknown" rather than a count it does not have. The source is only read, never changed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click
import orjson

from tlytics.client.destination import queue_dirs
from tlytics.client.transport import Outcome, Reply, Transport, backoff_delay_s, classify, retry_after_s
from tlytics.errors import DeliveryError, InvalidEvent
from tlytics.events import normalize_event
from tlytics.ingest.entry import decode_spool_entry
from tlytics.jsontext import DEPTH_MAX, parse_checked
from tlytics.spool import Spool
from tlytics.timefmt import format_rfc3339_us

SEND_ATTEMPTS = 5


@dataclass
class Found:
    """One event read from the source, with where it came from (for error messages)."""

    where: str
    event: dict[str, Any]


@dataclass
class Summary:
    read: int = 0
    sent: int = 0
    # None once the server could not be asked which ids it stores: then some of `sent` may
    # have been stored already, and no count would be true.
    already_stored: int | None = 0
    invalid: int = 0
    failed: int = 0
    # Events whose id an earlier event of the source already had, with the same content: sent
    # once, since the server stores an id once.
    repeated: int = 0
    # Why already_stored is unknown: one line, shown once.
    warning: str | None = None
    # In source order: every invalid line or entry once, then what the server refused.
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.invalid == 0 and self.failed == 0

    def line(self) -> str:
        stored = "unknown" if self.already_stored is None else str(self.already_stored)
        return (
            f"read {self.read}, sent {self.sent}, already stored {stored}, invalid {self.invalid}, failed {self.failed}"
        )


def _derived_id(line: bytes, occurrence: int) -> str:
    """A stable id for an id-less line: the same file replayed twice gives the same ids."""
    digest = bytearray(hashlib.sha256(line + b"\0" + str(occurrence).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8: custom
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(digest)))


def read_ndjson(stream: IO[bytes], name: str, summary: Summary) -> Iterator[Found]:
    seen: Counter[bytes] = Counter()
    for number, line in enumerate(stream, start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{name}:{number}"
        try:
            event = _read_json(line)
        except ValueError as exc:  # also json.JSONDecodeError and UnicodeDecodeError
            summary.invalid += 1
            summary.problems.append(f"{where}: invalid JSON: {exc}")
            continue
        if isinstance(event, dict) and event.get("id") is None:
            seen[line] += 1
            event = {**event, "id": _derived_id(line, seen[line])}
        if isinstance(event, dict) and "received_at" in event:
            # A line of the server's own /export: when the server received the event is the
            # server's to say, not a field of the event.
            event = {name: value for name, value in event.items() if name != "received_at"}
        yield Found(where, event)


def _read_json(text: bytes) -> Any:
    """JSON read exactly as the server reads it (orjson would turn an integer beyond 64 bits
    into a float, changing the data), with what the server refuses marked for validation."""
    try:
        return parse_checked(text.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"nests deeper than {DEPTH_MAX} levels") from None


def _json_bytes(value: Any) -> bytes:
    """Compact JSON that keeps every integer exact (orjson refuses those beyond 64 bits)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _events_of_spool_entry(value: bytes) -> list[dict[str, Any]]:
    entry = _read_json(value)
    if isinstance(entry, list):  # a client spool entry: a list of events
        return entry
    if isinstance(entry, dict) and "received_at" in entry:  # a server spool entry
        _, rows = decode_spool_entry(value)
        return [
            {
                "id": str(uuid.UUID(hex=id_hex)),
                "key": key,
                "timestamp": format_rfc3339_us(ts),
                "data": _read_json(bytes(data)),
            }
            for id_hex, key, ts, data in rows
        ]
    if isinstance(entry, dict) and "events" in entry:  # a client dead-letter record
        return list(entry["events"])
    raise ValueError("not a Tlytics spool entry")


def read_spool(directory: Path, summary: Summary) -> Iterator[Found]:
    # A client spool_dir holds one queue per destination (see tlytics.client.destination).
    queues = queue_dirs(directory) or [directory]
    if not all((queue_dir / "cache.db").exists() for queue_dir in queues):
        raise click.UsageError(f"{directory} holds no Tlytics spool (no cache.db)")
    for queue_dir in queues:
        yield from _read_one_spool(queue_dir, summary)


def _read_one_spool(queue_dir: Path, summary: Summary) -> Iterator[Found]:
    spool = Spool(queue_dir)
    try:
        for key, value in spool.peek(sys.maxsize):
            try:
                events = _events_of_spool_entry(value)
            except (ValueError, TypeError, KeyError) as exc:
                summary.invalid += 1
                summary.problems.append(f"{queue_dir} entry {key}: unreadable: {exc}")
                continue
            for position, event in enumerate(events):
                yield Found(f"{queue_dir} entry {key} event {position}", event)
    finally:
        spool.close()


def _validated(found: Found, summary: Summary) -> dict[str, Any] | None:
    try:
        normalize_event(found.event, 0, 0)
    except InvalidEvent as exc:
        summary.invalid += 1
        field_note = f" ({exc.field})" if exc.field else ""
        summary.problems.append(f"{found.where}: {exc.message}{field_note}")
        return None
    return found.event


def _canonical_id(event_id: str) -> str:
    """The form /lookup answers with (lowercase, hyphens), for any spelling the server accepts."""
    return str(uuid.UUID(event_id))


def _to_send(found_events: Iterator[Found], summary: Summary) -> list[Found]:
    """The valid events of the source, the first of each id only. Checked as read, so every
    problem is reported once and in the source's order.

    The server stores an id once, so a later event with a known id is either the same event
    again (counted as repeated, not sent) or a different one that would be acknowledged and
    never stored (invalid, reported)."""
    first_of: dict[str, Found] = {}
    kept: list[Found] = []
    for found in found_events:
        if _validated(found, summary) is None:
            continue
        event_id = _canonical_id(found.event["id"])
        first = first_of.setdefault(event_id, found)
        if first is found:
            kept.append(found)
        elif {**first.event, "id": event_id} == {**found.event, "id": event_id}:
            summary.repeated += 1
        else:
            summary.invalid += 1
            summary.problems.append(
                f"{found.where}: id {event_id} is also {first.where}'s, with other content;"
                " the server keeps one event per id"
            )
    return kept


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

    def _stored(self, ids: list[str]) -> set[str]:
        """Which of `ids` the server stores (canonical form); empty once that is unknowable."""
        if not self._lookup_usable:
            return set()
        reply = self._request(self._reads, "/lookup", orjson.dumps({"ids": ids}))
        answer = reply.json()
        if reply.status == 200 and isinstance(answer, dict) and isinstance(answer.get("present"), list):
            return {_canonical_id(event_id) for event_id in answer["present"]}
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
        summary = self._summary
        try:
            stored = self._stored([found.event["id"] for found in batch])
        except DeliveryError as exc:
            summary.failed += len(batch)
            summary.problems.append(f"lookup failed: {exc}")
            return
        pending = [found for found in batch if _canonical_id(found.event["id"]) not in stored]
        if summary.already_stored is not None:
            summary.already_stored += len(batch) - len(pending)
        while pending:
            try:
                reply = self._request(self._writes, "/batch", _json_bytes({"events": [f.event for f in pending]}))
            except DeliveryError as exc:
                summary.failed += len(pending)
                summary.problems.append(f"{len(pending)} events not delivered: {exc}")
                return
            if classify(reply.status) is Outcome.DELIVERED:
                summary.sent += len(pending)
                return
            answer = reply.json()
            index = answer.get("index") if isinstance(answer, dict) else None
            if isinstance(index, int) and 0 <= index < len(pending):
                rejected = pending.pop(index)
                summary.failed += 1
                summary.problems.append(f"{rejected.where}: rejected by the server: {answer.get('error')}")
                continue
            summary.failed += len(pending)
            summary.problems.append(f"{len(pending)} events rejected with {reply.status}: {answer}")
            return


def _first_key(value: str | None) -> str | None:
    """One key from a value that may be the server's comma-separated list (TLYTICS_WRITE_KEYS):
    the server accepts any of them."""
    if value is None:
        return None
    keys = [key.strip() for key in value.split(",") if key.strip()]
    return keys[0] if keys else None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    metavar="URL",
    envvar="TLYTICS_SERVER",
    help="Server base URL, e.g. http://127.0.0.1:8081 [TLYTICS_SERVER]",
)
@click.option(
    "--spool",
    "spool_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A client spool_dir (or a server's spool directory).",
)
@click.option(
    "--file",
    "file_name",
    metavar="PATH",
    help="An NDJSON file, one event per line (a server's /export?format=ndjson too); - for stdin.",
)
@click.argument("stdin_marker", required=False, metavar="[-]")
@click.option(
    "--batch-size", default=1000, show_default=True, type=click.IntRange(1, 10_000), help="Events per request."
)
@click.option("--dry-run", is_flag=True, help="Only read and validate; send nothing.")
@click.option(
    "--write-key",
    envvar=["TLYTICS_WRITE_KEYS", "TLYTICS_WRITE_KEY"],
    help="Key for sending (POST /batch), as the server's --write-key"
    " [TLYTICS_WRITE_KEYS, the server's comma-separated list: its first key; or TLYTICS_WRITE_KEY].",
)
@click.option(
    "--read-key",
    envvar=["TLYTICS_READ_KEYS", "TLYTICS_READ_KEY"],
    help="Key for asking which events are already stored (POST /lookup), as the server's --read-key;"
    " needed when the server has read keys [TLYTICS_READ_KEYS: its first key; or TLYTICS_READ_KEY].",
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per request.")
def main(
    server: str | None,
    spool_dir: Path | None,
    file_name: str | None,
    stdin_marker: str | None,
    batch_size: int,
    dry_run: bool,
    write_key: str | None,
    read_key: str | None,
    timeout: float,
) -> None:
    """Resend events from a spool, an NDJSON file or stdin (-) to a Tlytics server."""
    if stdin_marker not in (None, "-"):
        raise click.UsageError(f"unexpected argument {stdin_marker!r}; use - for stdin")
    sources = [s for s in (spool_dir, file_name, stdin_marker) if s is not None]
    if len(sources) != 1:
        raise click.UsageError("give exactly one source: --spool DIR, --file PATH, or - for stdin")
    if not dry_run and not server:
        raise click.UsageError("--server is required (or --dry-run)")

    summary = Summary()
    found_events = _read_source(spool_dir, file_name, summary)
    valid = _to_send(found_events, summary)
    summary.read = len(valid) + summary.invalid + summary.repeated
    replayer = None
    if not dry_run:
        assert server is not None
        replayer = _replayer(server, _first_key(write_key), _first_key(read_key), timeout, summary)
    with click.progressbar(length=len(valid), label="replaying" if replayer else "checking", file=sys.stderr) as bar:
        for start in range(0, len(valid), batch_size):
            batch = valid[start : start + batch_size]
            if replayer is not None:
                replayer.send(batch)
            bar.update(len(batch))

    if summary.warning is not None:
        click.echo(summary.warning, err=True)
    for problem in summary.problems:
        click.echo(problem, err=True)
    if dry_run:
        repeated = f", repeated {summary.repeated}" if summary.repeated else ""
        click.echo(f"dry run: read {summary.read}, valid {len(valid)}, invalid {summary.invalid}{repeated}")
    else:
        click.echo(summary.line())
    sys.exit(0 if summary.ok else 1)


def _read_source(spool_dir: Path | None, file_name: str | None, summary: Summary) -> Iterator[Found]:
    if spool_dir is not None:
        return read_spool(spool_dir, summary)
    if file_name not in (None, "-"):
        path = Path(str(file_name))
        if not path.is_file():
            raise click.UsageError(f"no such file: {path}")
        return _read_file(path, summary)
    return read_ndjson(sys.stdin.buffer, "stdin", summary)


def _read_file(path: Path, summary: Summary) -> Iterator[Found]:
    with path.open("rb") as stream:
        yield from read_ndjson(stream, str(path), summary)


def _replayer(server: str, write_key: str | None, read_key: str | None, timeout_s: float, summary: Summary) -> Replayer:
    writes = Transport(server, timeout_s=timeout_s, write_key=write_key, gzip_min_bytes=4096)
    # Transport sends one bearer key; the read key gets a connection of its own. Without one,
    # /lookup gets the write key, which a server without read keys does not even look at.
    reads = Transport(server, timeout_s=timeout_s, write_key=read_key, gzip_min_bytes=4096) if read_key else writes
    return Replayer(writes, reads, summary)
