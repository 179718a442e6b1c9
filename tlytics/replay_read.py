"""What `tlytics-replay` reads: events from an NDJSON stream (a file, stdin, a server's own
/export) or from spool directories (a client's, in either layout, or a server's), as a stream.

Nothing is held but the event being read and, per event, its id and a digest of its content:
a replay of a file larger than memory must not load it. That is enough to send each id once
(the server stores an id once) and to tell a repeated event from a different one reusing an
id. Every problem is counted and reported once, in the source's order.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from tlytics.errors import InvalidEvent
from tlytics.events import normalize_event
from tlytics.jsontext import DEPTH_MAX, parse_checked
from tlytics.spool import Spool
from tlytics.spool.entry import decode_spool_entry, spool_entry_parts
from tlytics.timefmt import format_rfc3339_us

# Spool entries read per query: a cursor is never held open across a whole replay (a client
# may be appending to the spool meanwhile), nor the whole spool read at once.
SPOOL_ENTRIES_PER_READ = 100
# A client spool_dir holds queue/ (one spool for every destination) or, one spool per
# destination, a subdirectory per destination holding queue/: looked for this deep.
SPOOL_SEARCH_DEPTH = 3


@dataclass
class Found:
    """One event read from the source, with where it came from (for error messages)."""

    where: str
    event: dict[str, Any]


@dataclass
class Summary:
    sent: int = 0
    # None once the server could not be asked which ids it stores: then some of `sent` may
    # have been stored already, and no count would be true.
    already_stored: int | None = 0
    invalid: int = 0
    failed: int = 0
    # Events whose id an earlier event of the source already had, with the same content: sent
    # once, since the server stores an id once.
    repeated: int = 0
    valid: int = 0
    # Why already_stored is unknown: one line, shown once.
    warning: str | None = None
    # In the order met: every invalid line or entry once, and what the server refused.
    problems: list[str] = field(default_factory=list)

    @property
    def read(self) -> int:
        return self.valid + self.invalid + self.repeated

    @property
    def ok(self) -> bool:
        return self.invalid == 0 and self.failed == 0

    def line(self) -> str:
        stored = "unknown" if self.already_stored is None else str(self.already_stored)
        return (
            f"read {self.read}, sent {self.sent}, already stored {stored}, invalid {self.invalid}, failed {self.failed}"
        )


@dataclass
class Progress:
    """How far reading has gone, in the source's own unit (bytes of a file, spool entries);
    total is None when unknown (stdin)."""

    total: int | None = None
    done: int = 0


def _derived_id(line: bytes, occurrence: int) -> str:
    """A stable id for an id-less line: the same file replayed twice gives the same ids."""
    digest = bytearray(hashlib.sha256(line + b"\0" + str(occurrence).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8: custom
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(digest)))


def read_json(text: bytes) -> Any:
    """JSON read exactly as the server reads it (orjson would turn an integer beyond 64 bits
    into a float, changing the data), with what the server refuses marked for validation."""
    try:
        return parse_checked(text.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"nests deeper than {DEPTH_MAX} levels") from None


def json_bytes(value: Any) -> bytes:
    """Compact JSON that keeps every integer exact (orjson refuses those beyond 64 bits)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def read_ndjson(stream: IO[bytes], name: str, summary: Summary, progress: Progress) -> Iterator[Found]:
    # Id-less lines seen, by a digest of the line (not the line: that would keep the file).
    seen: Counter[bytes] = Counter()
    for number, raw_line in enumerate(stream, start=1):
        progress.done += len(raw_line)
        line = raw_line.strip()
        if not line:
            continue
        where = f"{name}:{number}"
        try:
            event = read_json(line)
        except ValueError as exc:  # also json.JSONDecodeError and UnicodeDecodeError
            summary.invalid += 1
            summary.problems.append(f"{where}: invalid JSON: {exc}")
            continue
        if isinstance(event, dict) and event.get("id") is None:
            line_digest = hashlib.blake2b(line, digest_size=16).digest()
            seen[line_digest] += 1
            event = {**event, "id": _derived_id(line, seen[line_digest])}
        if isinstance(event, dict) and "received_at" in event:
            # A line of the server's own /export: when the server received the event is the
            # server's to say, not a field of the event.
            event = {name: value for name, value in event.items() if name != "received_at"}
        yield Found(where, event)


def _events_of_spool_entry(value: bytes) -> list[dict[str, Any]]:
    entry = read_json(value)
    if isinstance(entry, list) and entry and all(_is_server_request(item) for item in entry):
        # A server's group entry: the requests of one group commit (tlytics.spool.entry).
        return [event for part in spool_entry_parts(value) for event in _events_of_server_request(part)]
    if isinstance(entry, list):  # a client spool entry: a list of events
        return entry
    if _is_server_request(entry):  # a server spool entry of one request
        return _events_of_server_request(value)
    if isinstance(entry, dict) and "events" in entry:  # a client dead-letter record
        return list(entry["events"])
    raise ValueError("not a Tlytics spool entry")


def _is_server_request(item: Any) -> bool:
    return isinstance(item, dict) and "received_at" in item


def _events_of_server_request(value: bytes) -> list[dict[str, Any]]:
    _, rows = decode_spool_entry(value)
    return [
        {
            "id": str(uuid.UUID(hex=id_hex)),
            "key": key,
            "timestamp": format_rfc3339_us(ts),
            "data": read_json(bytes(data)),
        }
        for id_hex, key, ts, data in rows
    ]


def spool_directories(directory: Path) -> list[Path]:
    """The spools (directories holding a cache.db) that `directory` stands for: itself (a
    server's spool, or one client queue), else every client queue/ below it, the dead-letter
    ones left out (what a server refused once it refuses again), sorted by path."""
    if (directory / "cache.db").is_file():
        return [directory]
    found: list[Path] = []
    level = [directory]
    for _ in range(SPOOL_SEARCH_DEPTH):
        queues = [folder / "queue" for folder in level if (folder / "queue" / "cache.db").is_file()]
        found.extend(queues)
        level = sorted(
            child for folder in level for child in folder.iterdir() if child.is_dir() and child.name != "dead-letter"
        )
    return sorted(set(found))


def count_spool_entries(directories: list[Path]) -> int:
    total = 0
    for directory in directories:
        spool = Spool(directory)
        try:
            total += spool.count()
        finally:
            spool.close()
    return total


def read_spools(directories: list[Path], summary: Summary, progress: Progress) -> Iterator[Found]:
    for directory in directories:
        yield from _read_spool(directory, summary, progress)


def _read_spool(queue_dir: Path, summary: Summary, progress: Progress) -> Iterator[Found]:
    spool = Spool(queue_dir)
    try:
        last_key = -1
        while True:
            entries = list(spool.iter_oldest(SPOOL_ENTRIES_PER_READ, after=last_key))
            if not entries:
                return
            last_key = entries[-1][0]
            for key, value in entries:
                progress.done += 1
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


def _is_valid(found: Found, summary: Summary) -> bool:
    try:
        normalize_event(found.event, 0, 0)
    except InvalidEvent as exc:
        summary.invalid += 1
        field_note = f" ({exc.field})" if exc.field else ""
        summary.problems.append(f"{found.where}: {exc.message}{field_note}")
        return False
    return True


def canonical_id(event_id: str) -> str:
    """The form /lookup answers with (lowercase, hyphens), for any spelling the server accepts."""
    return str(uuid.UUID(event_id))


def _content_digest(event: dict[str, Any]) -> bytes:
    """What tells two events with one id apart, in 16 bytes (the id itself left out: its
    spelling may differ)."""
    content = {name: value for name, value in event.items() if name != "id"}
    try:
        text = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, which only json writes
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.blake2b(text, digest_size=16).digest()


def first_of_each_id(found_events: Iterator[Found], summary: Summary) -> Iterator[Found]:
    """The valid events of the source as they are read, the first of each id only; counts
    read and valid events in `summary`.

    The server stores an id once, so a later event with a known id is either the same event
    again (counted as repeated, not sent) or a different one that would be acknowledged and
    never stored (invalid, reported)."""
    # Per id (its 16 bytes): the digest of the first event's content and where it was.
    first_of: dict[bytes, tuple[bytes, str]] = {}
    for found in found_events:
        if not _is_valid(found, summary):
            continue
        event_id = uuid.UUID(found.event["id"])
        digest = _content_digest(found.event)
        first = first_of.get(event_id.bytes)
        if first is None:
            first_of[event_id.bytes] = (digest, found.where)
            summary.valid += 1
            yield found
            continue
        first_digest, first_where = first
        if first_digest == digest:
            summary.repeated += 1
        else:
            summary.invalid += 1
            summary.problems.append(
                f"{found.where}: id {event_id} is also {first_where}'s, with other content;"
                " the server keeps one event per id"
            )
