"""`pip install tlytics` is the client library only: it imports and delivers without any of the
server's packages, and the `tlytics` command says which extra to install instead of a traceback."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import tlytics
from tests.helpers import ServerProcess
from tests.shared_server import StoredSince

ROOT = Path(__file__).resolve().parent.parent

SERVER_ONLY = ("aiohttp", "apsw", "msgspec", "uvloop", "prometheus_client", "click", "psycopg", "structlog")

# Makes every server-only package look uninstalled, as after `pip install tlytics`.
BLOCK_SERVER_PACKAGES = textwrap.dedent(
    f"""
    import sys

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {SERVER_ONLY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
    """
)


def run_without_server_packages(code: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_SERVER_PACKAGES + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_client_imports_and_delivers_without_the_server_packages(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path
) -> None:
    server = shared_server
    result = run_without_server_packages(
        f"""
        import tlytics, tlytics.client
        from tlytics import Client, Config, Event

        client = Client(Config(server_url={server.url!r}, spool_dir={str(tmp_path / "spool")!r}))
        ids = [client.emit(Event(key="signup", data={{"n": n}})) for n in range(20)]
        assert client.close(timeout=30.0), client.stats
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in {SERVER_ONLY!r})
        assert not loaded, loaded
        print(" ".join(ids))
        """
    )
    assert result.returncode == 0, result.stderr
    sent = set(result.stdout.split())
    assert len(sent) == 20
    server.wait_drained()
    assert set(stored_since.ids()) == sent


def test_tlytics_command_without_the_server_extra_names_it_in_one_line() -> None:
    result = run_without_server_packages("from tlytics.cli import main; main(['--port', '0'])")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the tlytics server needs the server extra: pip install 'tlytics[server]'" in lines[0]


def test_replay_command_without_the_server_extra_names_it_in_one_line() -> None:
    result = run_without_server_packages("from tlytics.replay_command import main; main()")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "tlytics-replay needs the server extra: pip install 'tlytics[server]'" in lines[0]


def test_core_dependencies_are_the_client_s_only() -> None:
    requirements = importlib.metadata.requires("tlytics") or []
    core = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in requirements if "extra ==" not in r}
    assert core == {"diskcache", "orjson", "platformdirs", "crawler-user-agents"}
    server_extra = {
        re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower().replace("_", "-")
        for r in requirements
        if 'extra == "server"' in r
    }
    assert {"aiohttp", "apsw", "msgspec", "structlog", "click", "prometheus-client", "psycopg"} <= server_extra


def test_package_is_marked_typed() -> None:
    assert (Path(tlytics.__file__).parent / "py.typed").is_file()
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["tlytics"]


def test_importing_the_client_does_not_load_asyncio() -> None:
    """A synchronous application (a script, a WSGI app) pays nothing for asyncio: it is loaded
    only by aflush()/aclose() or an asyncio middleware. (Django is blocked too: diskcache
    imports it when installed, and Django's asgiref loads asyncio.)"""
    result = run_without_server_packages(
        """
        sys.modules["django"] = None
        import tlytics.client
        from tlytics import Client, Config
        assert "asyncio" not in sys.modules, "asyncio loaded by import tlytics.client"
        """
    )
    assert result.returncode == 0, result.stderr
