"""Imports follow the pipeline: importing one face of the product does not load the others.

The writer process imports the spool, the store and its own code, not the HTTP server (it
used to load ~80 modules through `tlytics.ingest`, aiohttp.web among them); the client never
loads aiohttp or the server; `import tlytics` loads neither face; `Settings` is a leaf. Each
check runs a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Generous: a fresh interpreter on a busy machine.
IMPORT_TIMEOUT_S = 60


def modules_loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement` (an import)."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=True
    )
    return set(json.loads(done.stdout))


def under(modules: set[str], *packages: str) -> list[str]:
    """Those of `modules` that are one of `packages` or inside one."""
    return sorted(name for name in modules if any(name == p or name.startswith(p + ".") for p in packages))


def test_the_writer_process_loads_no_http_server_and_no_client() -> None:
    loaded = modules_loaded_by("import tlytics.writer.process")
    assert under(loaded, "aiohttp") == []
    assert under(loaded, "tlytics.client") == []
    # Settings is all it takes from the server's package (the server hands it over whole).
    assert under(loaded, "tlytics.ingest") == ["tlytics.ingest", "tlytics.ingest.settings"]
    assert "tlytics.spool" in loaded and "tlytics.store" in loaded


def test_the_client_loads_no_aiohttp_and_no_server() -> None:
    loaded = modules_loaded_by("import tlytics.client")
    assert under(loaded, "aiohttp", "tlytics.ingest", "tlytics.writer", "tlytics.store") == []


@pytest.mark.parametrize("face", ["tlytics.client", "tlytics.ingest", "tlytics.writer", "tlytics.store"])
def test_import_tlytics_loads_no_face_of_the_product(face: str) -> None:
    assert under(modules_loaded_by("import tlytics"), face) == []


def test_the_server_app_does_not_load_the_client() -> None:
    loaded = modules_loaded_by("import tlytics.ingest.app")
    assert "aiohttp.web" in loaded  # the check below looks at a real server import
    assert under(loaded, "tlytics.client") == []


def test_settings_imports_no_other_module_of_the_server() -> None:
    loaded = modules_loaded_by("import tlytics.ingest.settings")
    assert under(loaded, "tlytics.ingest") == ["tlytics.ingest", "tlytics.ingest.settings"]
    assert under(loaded, "aiohttp", "prometheus_client") == []


def test_the_public_names_are_still_there_when_asked_for() -> None:
    loaded = modules_loaded_by("from tlytics import Client, TlyticsError\nfrom tlytics.ingest import create_app")
    assert {"tlytics.client", "tlytics.ingest.app"} <= loaded
