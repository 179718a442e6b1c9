"""Opening the store the settings choose, for the writer: the embedded SQLite file at `--db`,
or PostgreSQL at `--store postgresql://…`, shared by any number of servers, under the name
of the node writing to it.

The writer (its thread, or its process of its own) opens its store here. This module knows
the server's settings only by the few values it reads (`StoreSettings`), so the writer
process imports the store and not the HTTP server that declares those settings.
"""

from __future__ import annotations

import os
import socket
import string
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tlytics.store.base import StoreWriter
from tlytics.store.sqlite import SQLiteWriter, Synchronous

# In the spool directory: the name this server's writer gives PostgreSQL (see node_name).
NODE_NAME_FILE = "node-name"
_HOST_PART_MAX = 40
_NODE_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-.")


class StoreSettings(Protocol):
    """What opening the store reads from the server's `Settings` (tlytics.ingest.settings)."""

    @property
    def store_url(self) -> str | None: ...
    @property
    def db_path(self) -> Path: ...
    @property
    def spool_sync(self) -> Synchronous: ...
    @property
    def unique_properties(self) -> Sequence[str]: ...
    @property
    def declared_properties(self) -> Sequence[str]: ...
    @property
    def resolved_spool_dir(self) -> Path: ...


def node_name(spool_dir: Path) -> str:
    """The name of the server owning `spool_dir`, as its writer tells PostgreSQL: the host name
    and a random suffix, made on first use and kept in the spool directory.

    Stable across restarts (the spool directory is what a node is: its acknowledged events
    wait there), different for two servers on one host and for two hosts with the same path,
    and a copied or rebuilt machine with a fresh spool is a new node, which is right: the name
    only labels the node's own rows (its event counter), never decides what is stored.
    """
    path = spool_dir / NODE_NAME_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    host = "".join(c if c in _NODE_NAME_CHARACTERS else "-" for c in socket.gethostname())[:_HOST_PART_MAX]
    name = f"{host or 'node'}-{uuid.uuid4().hex[:8]}"
    spool_dir.mkdir(parents=True, exist_ok=True)
    draft = spool_dir / f".{NODE_NAME_FILE}.{uuid.uuid4().hex}"
    draft.write_text(name + "\n")
    try:
        # A link never replaces a name already there: whoever made it first wins.
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


def open_writer(settings: StoreSettings) -> StoreWriter:
    """The chosen store's write side, for the writer alone (its thread or its process); it
    migrates the store as it opens (PostgreSQL may have been down as this server started, so
    its migrations may not have run yet). Opened on first use and, when opening fails, again
    on the next attempt (WriterResources); a PostgreSQL writer replaces a broken connection
    by itself."""
    if settings.store_url is None:
        # The store syncs at least as hard as the spool: with a "full" spool, a power loss
        # must not lose store commits whose spool entries were already removed.
        return SQLiteWriter(
            settings.db_path,
            synchronous=settings.spool_sync,
            unique_properties=settings.unique_properties,
            declared_properties=settings.declared_properties,
        )
    from tlytics.store.postgres import PostgresWriter

    # PostgreSQL commits with synchronous_commit on whatever --spool-sync says.
    return PostgresWriter(
        settings.store_url,
        node=node_name(settings.resolved_spool_dir),
        unique_properties=settings.unique_properties,
        declared_properties=settings.declared_properties,
    )
