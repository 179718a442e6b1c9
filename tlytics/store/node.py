"""The name a server's writer goes by in a shared store (PostgreSQL), kept in its spool
directory."""

from __future__ import annotations

import os
import socket
import string
import uuid
from pathlib import Path

# In the spool directory: the name this server's writer gives PostgreSQL (see node_name).
NODE_NAME_FILE = "node-name"
_HOST_PART_MAX = 40
_NODE_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-.")


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
