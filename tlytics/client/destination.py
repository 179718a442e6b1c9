"""Where a client spools: one directory per destination (server URL + write key) inside
`Config.spool_dir`, so two applications sharing a spool_dir (the default one, in the user's
cache directory) never send each other's events to the wrong server or under the wrong key.

    <spool_dir>/to-<16 hex digits of sha256(url, key)>/queue        entries to send
                                                     /dead-letter  entries the server refused
                                                     /sender.lock  the sender lease
                                                     /wake         rung by flush()
                                                     /destination.json  the URL, for people

Before this layout, a spool_dir held `queue/` directly, for whichever client used it. Its
entries do not say where they were meant to go; the first client that opens that spool_dir
adopts them (moves them into its own destination's queue, logged at WARNING), which is what
the previous version did, minus the mixing from then on.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from pathlib import Path

import orjson

from tlytics.spool import Spool

log = logging.getLogger("tlytics.client")

_LEGACY_QUEUE = "queue"
_ADOPT_CHUNK_ENTRIES = 500


def destination_dir(spool_dir: Path, server_url: str, write_key: str | None) -> Path:
    """The directory of the spool for events meant for `server_url` under `write_key`."""
    identity = f"{server_url.rstrip('/')}\n{write_key or ''}".encode()
    return spool_dir / f"to-{hashlib.sha256(identity).hexdigest()[:16]}"


def open_destination_queue(directory: Path, server_url: str, *, min_free_bytes: int) -> Spool:
    """The queue spool of one destination, created if need be; adopts a legacy queue left in
    the spool_dir above it by a previous version."""
    directory.mkdir(parents=True, exist_ok=True)
    label = directory / "destination.json"
    if not label.exists():
        # The URL only, never the key: for a person wondering what the directory is.
        label.write_bytes(orjson.dumps({"server_url": server_url}))
    spool = Spool(directory / "queue", min_free_bytes=min_free_bytes)
    adopt_legacy_queue(directory.parent, spool)
    return spool


def open_dead_letter(directory: Path, *, min_free_bytes: int) -> Spool:
    directory.mkdir(parents=True, exist_ok=True)
    return Spool(directory / "dead-letter", min_free_bytes=min_free_bytes)


def adopt_legacy_queue(spool_dir: Path, into: Spool) -> int:
    """Move the entries of `<spool_dir>/queue` (the layout before destinations) into `into`;
    return how many. Copy, then remove: a crash between the two sends an entry twice, which
    its events' ids make harmless."""
    legacy = spool_dir / _LEGACY_QUEUE
    if not (legacy / "cache.db").exists():
        return 0
    lock_fd = os.open(spool_dir / "adopt.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # one process adopts; the others find it empty
        old = Spool(legacy)
        moved = 0
        try:
            while batch := old.peek(_ADOPT_CHUNK_ENTRIES):
                into.append_many([value for _, value in batch])
                old.remove([key for key, _ in batch])
                moved += len(batch)
        finally:
            old.close()
    finally:
        os.close(lock_fd)
    if moved:
        log.warning(
            "client spool %s held %d entries of an earlier version's layout, for no named destination;"
            " adopted them for %s",
            legacy,
            moved,
            into.directory.parent,
        )
    return moved


def queue_dirs(spool_dir: Path) -> list[Path]:
    """Every queue a client spool_dir holds: one per destination, and an earlier version's."""
    found = sorted(spool_dir.glob("to-*/queue"))
    if (spool_dir / _LEGACY_QUEUE / "cache.db").exists():
        found.insert(0, spool_dir / _LEGACY_QUEUE)
    return found
