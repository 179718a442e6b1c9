"""What a store is to the server, whatever its kind: `open_backend` (tlytics.store.open) gives
a `Backend`, which says what the store is (`describe`, the file to lock), opens its read side
(`reader`) and its write side (`writer`), migrates it, and tells what its driver's errors mean
(`unreachable`, `connection_lost`, `refuses_for_good`). Nothing outside `tlytics.store` asks
which store it is: a third backend is a package with a `Backend` and one line in
`open_backend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tlytics.errors import StoreError
from tlytics.store.base import Queries, StoreReader, StoreWriter
from tlytics.store.on_demand import ReaderOnDemand


class StoreSettings(Protocol):
    """What choosing and opening the store reads from the server's `Settings`
    (tlytics.ingest.settings), so the writer process imports the store, not the HTTP server."""

    @property
    def store_url(self) -> str | None: ...
    @property
    def db_path(self) -> Path: ...
    @property
    def spool_sync(self) -> Literal["normal", "full"]: ...
    @property
    def unique_properties(self) -> Sequence[str]: ...
    @property
    def declared_properties(self) -> Sequence[str]: ...
    @property
    def resolved_spool_dir(self) -> Path: ...


@dataclass(frozen=True, slots=True)
class StoreAt:
    """The store settings a bare URL gives (`sqlite:<path>` or `postgresql://…`), the rest at
    their defaults: for tools and tests that open a store by its address alone."""

    store_url: str | None
    db_path: Path = Path("analytics.db")
    spool_sync: Literal["normal", "full"] = "normal"
    unique_properties: Sequence[str] = ()
    declared_properties: Sequence[str] = ()
    resolved_spool_dir: Path = Path("tlytics.spool")

    @classmethod
    def of(cls, url: str) -> StoreAt:
        if url.startswith("sqlite:"):
            return cls(store_url=None, db_path=Path(url.removeprefix("sqlite:")))
        return cls(store_url=url)


class Backend(Protocol):
    """One store, as the server and its writer use it, whatever its kind."""

    # The store's query functions, for `reader.run(backend.queries.page, …)`.
    queries: Queries[Any]
    # Whether the server starts while the store does not answer (a database server of its own:
    # events wait in the spool), or the store must open at start (a local file).
    starts_without_store: bool

    def describe(self) -> str:
        """Which store this is, fit for a log line (no password)."""
        ...

    def lock_path(self) -> Path | None:
        """The store's own file, that one server at a time may write (InstanceLock); None for
        a store shared on purpose by several servers."""
        ...

    def node_name(self) -> str | None:
        """The name this server's writer gives a shared store (None: the store is not shared)."""
        ...

    def migrate(self) -> None:
        """Bring the store to this version's schema; StoreError when it cannot."""
        ...

    def open_reader(self, statement_timeout_s: float) -> StoreReader[Any]:
        """The store's read side now (migrating it first where the store may have been down at
        start), its reads stopped after `statement_timeout_s`; StoreError when that fails."""
        ...

    def reader(self, statement_timeout_s: float) -> ReaderOnDemand:
        """The read side, opened on first use (see ReaderOnDemand), the driver's errors
        translated by this backend."""
        ...

    def writer(self) -> StoreWriter:
        """The write side, for the writer alone; migrates the store as it opens."""
        ...

    def unreachable(self, exc: StoreError) -> bool:
        """Whether `exc` means the store cannot be reached now (503), not that a query failed."""
        ...

    def connection_lost(self, exc: StoreError) -> bool:
        """Whether `exc` means the connection is gone (a new one may well do)."""
        ...

    def refuses_for_good(self, exc: StoreError) -> bool:
        """Whether `exc` means the store refuses this server as configured (no waiting mends it)."""
        ...


def reader_on_demand(backend: Backend, statement_timeout_s: float) -> ReaderOnDemand:
    """`backend.reader`, written once for every backend."""
    return ReaderOnDemand(
        lambda: backend.open_reader(statement_timeout_s),
        backend.queries,
        unavailable=backend.unreachable,
        connection_lost=backend.connection_lost,
    )
