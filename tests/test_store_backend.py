"""The store's backend, chosen once (issue 20, item 2): `open_backend` tells the kinds of store
apart in one place, by the URL's scheme, and each backend sorts its own driver's errors, so
nothing in ingest asks which store it is. The behaviour of each kind with a running server is
in test_store_choice.py and test_nodes.py."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlytics.errors import StoreError, StoreMisconfigured, StoreUnavailable
from tlytics.ingest.settings import Settings
from tlytics.store.open import KNOWN_SCHEMES, open_backend


def test_an_unknown_kind_of_store_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(StoreMisconfigured) as raised:
        open_backend("mysql://user:secret@host/db")
    message = str(raised.value)
    assert "'mysql'" in message and "secret" not in message
    for scheme in KNOWN_SCHEMES:
        assert scheme in message


def test_the_settings_choose_the_backend_and_it_describes_the_store_as_the_settings_do(tmp_path: Path) -> None:
    sqlite = Settings(db_path=tmp_path / "a.db")
    backend = open_backend(sqlite)
    assert backend.describe() == sqlite.store_description
    assert backend.lock_path() == tmp_path / "a.db"  # one server per SQLite file
    assert backend.node_name() is None and not backend.starts_without_store
    shared = Settings(store_url="postgresql://tlytics:s3cret@127.0.0.1:1/db", spool_dir=tmp_path / "spool")
    postgres = open_backend(shared)
    assert postgres.describe() == shared.store_description and "s3cret" not in postgres.describe()
    assert postgres.lock_path() is None  # shared on purpose: only the spool is locked
    assert postgres.starts_without_store
    assert postgres.node_name() == postgres.node_name()  # kept in the spool directory
    assert open_backend(f"sqlite:{tmp_path / 'b.db'}").describe() == f"sqlite:{tmp_path / 'b.db'}"


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening, held for the test: a connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_postgresql_refusing_the_connection_is_unavailable_not_an_error(refusing_port: int) -> None:
    backend = open_backend(f"postgresql://tlytics:s3cret@127.0.0.1:{refusing_port}/tlytics")
    reader = backend.reader(statement_timeout_s=5)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            reader.run(backend.queries.count)  # answered 503, not 500
        assert "s3cret" not in str(raised.value)
        cause = raised.value.__cause__
        assert isinstance(cause, StoreError)
        # Sorted inside store/postgres: down for now, neither a broken query nor a refusal for good.
        assert backend.unreachable(cause) and not backend.refuses_for_good(cause)
        with pytest.raises(StoreUnavailable):
            reader.count()  # tried again on the next read
    finally:
        reader.close()


def test_a_sqlite_store_opens_without_loading_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from tlytics.store.open import open_backend\n"
        f"backend = open_backend('sqlite:{tmp_path / 'a.db'}')\n"
        "backend.migrate()\n"
        "reader = backend.reader(statement_timeout_s=5)\n"
        "assert reader.run(backend.queries.count) == 0\n"
        "reader.close()\n"
        "assert 'psycopg' not in sys.modules, 'psycopg loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
