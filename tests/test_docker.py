"""No Docker engine runs here, so these keep docker/ consistent with the code it packages:
port, environment variable names, entry point, health check, and that the files the
Dockerfile copies are enough to build the package."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import free_port
from tlytics.ingest.settings import DEFAULT_PORT, operator_options

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
SERVICE = COMPOSE["services"]["tlytics"]


def instruction(name: str) -> list[str]:
    """Arguments of every `NAME ...` instruction, continuation lines joined."""
    joined = DOCKERFILE.replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.MULTILINE)]


def dockerfile_env() -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in instruction("ENV"):
        pairs.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return pairs


def test_base_image_is_slim_python_311() -> None:
    (base,) = instruction("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base)


def test_runs_as_non_root_with_data_volume() -> None:
    (user,) = instruction("USER")
    assert user not in ("root", "0")
    assert json.loads(instruction("VOLUME")[0]) == ["/data"]
    assert dockerfile_env()["TLYTICS_DB"] == "/data/analytics.sqlite"


def test_ports_agree_with_the_cli_default() -> None:
    (exposed,) = instruction("EXPOSE")
    assert int(exposed) == DEFAULT_PORT == int(dockerfile_env()["TLYTICS_PORT"])
    assert SERVICE["ports"] == [f"{DEFAULT_PORT}:{DEFAULT_PORT}"]
    assert int(SERVICE["environment"]["TLYTICS_PORT"]) == DEFAULT_PORT


def test_every_tlytics_variable_is_one_the_cli_reads() -> None:
    known = {option.environment_variable for _, option in operator_options()}
    used = {k for k in dockerfile_env() if k.startswith("TLYTICS_")} | {
        k
        for service in COMPOSE["services"].values()
        for k in service.get("environment", {})
        if k.startswith("TLYTICS_")
    }
    assert used and used <= known, used - known


NODES = [name for name, service in COMPOSE["services"].items() if service.get("environment", {}).get("TLYTICS_STORE")]


def test_the_nodes_profile_runs_two_nodes_on_one_postgresql_each_with_its_own_spool() -> None:
    from tlytics.cli import parse_settings

    assert len(NODES) == 2
    database = COMPOSE["services"]["postgres"]["environment"]
    spools = set()
    for name in NODES:
        service = COMPOSE["services"][name]
        assert "nodes" in service["profiles"] and service["depends_on"]["postgres"]["condition"] == "service_healthy"
        settings, _ = parse_settings([], {k: str(v) for k, v in service["environment"].items()})
        assert settings.store_url is not None and settings.store_url.startswith("postgresql://")
        assert (
            f"{database['POSTGRES_USER']}:{database['POSTGRES_PASSWORD']}@postgres:5432/{database['POSTGRES_DB']}"
            in settings.store_url
        )
        (volume,) = service["volumes"]
        spools.add(volume.split(":")[0])
        assert volume.endswith(":/data") and str(settings.resolved_spool_dir).startswith("/data/")
    assert len(spools) == 2 and spools <= set(COMPOSE["volumes"]), "each node needs a spool of its own"


NGINX_CONFIG = (ROOT / "docker" / "nginx-nodes.conf").read_text()
# `resolve` on an upstream server (re-resolving its name at run time) came to open-source
# nginx in 1.27.3.
NGINX_RESOLVE_SINCE = (1, 27, 3)


def nginx_version(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    assert match, text
    return tuple(int(part) for part in match.groups(default="99"))


def test_the_balancer_config_is_valid_nginx_and_sends_to_both_nodes(tmp_path: Path) -> None:
    config = NGINX_CONFIG
    for name in NODES:
        assert f"server {name}:{COMPOSE['services'][name]['environment']['TLYTICS_PORT']}" in config
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed here (apt-get install nginx): only the upstreams were checked")
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=60).stderr
    if nginx_version(version) < NGINX_RESOLVE_SINCE:
        # An older nginx here than in the image: check the rest of the syntax without `resolve`.
        config = config.replace(" resolve ", " ")
    # nginx -t resolves upstream names without `resolve`: point them at loopback for the check.
    for name in NODES:
        config = config.replace(f"server {name}:", "server 127.0.0.1:")
    (tmp_path / "site.conf").write_text(config)
    main = f"pid {tmp_path}/nginx.pid; error_log stderr; events {{}} http {{ include {tmp_path}/site.conf; }}\n"
    (tmp_path / "nginx.conf").write_text(main)
    checked = subprocess.run(
        [nginx, "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr


def test_the_balancer_re_resolves_the_nodes_addresses() -> None:
    # A node recreated by Docker gets a new address: nginx asks Docker's DNS again (valid=…)
    # instead of keeping the address it resolved at start.
    assert re.search(r"^resolver 127\.0\.0\.11 valid=\d+s\b", NGINX_CONFIG, re.MULTILINE)
    servers = re.findall(r"^\s*server (\S+) (.*);$", NGINX_CONFIG, re.MULTILINE)
    assert {address.split(":")[0] for address, _ in servers} == set(NODES)
    assert all(options.split()[0] == "resolve" for _, options in servers), servers
    assert re.search(r"^\s*zone tlytics \d+k;", NGINX_CONFIG, re.MULTILINE), "resolve needs a shared memory zone"
    image = COMPOSE["services"]["balancer"]["image"]
    assert re.fullmatch(r"nginx:\d+\.\d+(\.\d+)?-alpine", image)
    assert nginx_version(image) >= NGINX_RESOLVE_SINCE, image


def test_the_balancer_waits_for_healthy_nodes() -> None:
    balancer = COMPOSE["services"]["balancer"]
    assert balancer["depends_on"] == {name: {"condition": "service_healthy"} for name in NODES}
    for name in NODES:
        assert COMPOSE["services"][name]["healthcheck"]["test"] == SERVICE["healthcheck"]["test"]


def test_the_nodes_profile_does_not_start_the_single_server() -> None:
    # A service without a profile is started with every profile: each one has its own.
    profiles = {name: service.get("profiles") for name, service in COMPOSE["services"].items()}
    assert all(profiles.values()), profiles
    nodes = {name for name, names in profiles.items() if "nodes" in names}
    assert nodes == {"postgres", "balancer", *NODES}
    assert "nodes" not in profiles["tlytics"]
    assert not any("single" in names for name, names in profiles.items() if name != "tlytics")


def test_one_image_built_once_and_never_pulled() -> None:
    builders = [name for name, service in COMPOSE["services"].items() if "build" in service]
    assert builders == ["tlytics"]
    image = SERVICE["image"]
    for name in NODES:
        service = COMPOSE["services"][name]
        assert service["image"] == image and service["pull_policy"] == "never" and "build" not in service


def test_the_image_installs_the_locked_versions_with_their_hashes() -> None:
    installs = [line for line in instruction("RUN") if "pip install" in line]
    assert installs, "the Dockerfile installs nothing"
    first = re.split(r"\s*&&\s*", installs[0])[0].split()
    assert first[:2] == ["pip", "install"] and "--require-hashes" in first
    assert first[first.index("-r") + 1] == "requirements.lock"
    # Every later pip install adds the project alone: nothing resolved from an index.
    for line in installs[1:]:
        for command in re.split(r"\s*&&\s*", line):
            if command.startswith("pip install"):
                assert "--no-deps" in command.split() and "--no-build-isolation" in command.split(), command
    copies = [line.split() for line in instruction("COPY")]
    assert copies[0] == ["requirements.lock", "./"], "the lock is copied (and installed) before the code"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "!requirements.lock" in ignore and ignore.index("!requirements.lock") > ignore.index("**/*.lock")


def test_entry_point_is_the_console_script() -> None:
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["tlytics"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["tlytics"].split(":")
    imported = __import__(module, fromlist=[function])
    assert callable(getattr(imported, function))


def test_compose_matches_the_original() -> None:
    # A named volume, which Docker creates writable by the image's non-root user (a bind mount
    # it creates is root's).
    assert SERVICE["volumes"] == ["tlytics-data:/data"] and "tlytics-data" in COMPOSE["volumes"]
    assert SERVICE["restart"] == "unless-stopped"
    dockerfile_check = json.loads(instruction("HEALTHCHECK")[0].split("CMD", 1)[1])
    assert SERVICE["healthcheck"]["test"] == ["CMD", *dockerfile_check]
    assert (ROOT / SERVICE["build"]["dockerfile"]).resolve() == (ROOT / "docker" / "Dockerfile")


def run_healthcheck(port: int) -> int:
    env = {**os.environ, "TLYTICS_PORT": str(port)}
    (check,) = instruction("HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1])
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], env=env, timeout=30, capture_output=True).returncode


def test_healthcheck_command_passes_on_a_live_server_and_fails_without(server_factory: Any) -> None:
    server = server_factory().start()
    assert run_healthcheck(server.port) == 0
    assert run_healthcheck(free_port()) == 1


def test_files_the_dockerfile_copies_build_the_package(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for line in instruction("COPY"):
        *sources, _ = line.split()
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, context / source)
    # As the Dockerfile installs it: --no-build-isolation, the build backend is the lock's
    # setuptools (installed in the layer before), not one fetched from an index into a fresh
    # isolated environment (which took most of this test's minute and is not what the image does).
    assert any("--no-build-isolation" in line.split() for line in instruction("RUN") if "pip install" in line)
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("-w", str(tmp_path / "dist"), str(context)),
        ],
        timeout=240,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (wheel,) = (tmp_path / "dist").glob("tlytics-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "tlytics = tlytics.cli:main" in archive.read(entry_points).decode()
    assert "tlytics/ingest/app.py" in names and "tlytics/healthcheck.py" in names
    assert "tlytics/ingest/openapi.json" in names  # package data the server serves


def test_healthcheck_follows_the_servers_own_flags(server_factory: Any) -> None:
    # The server listens where its flags say (ServerProcess passes --host and --port, no
    # TLYTICS_PORT): the check reads them from the server process, as it reads PID 1 in a container.
    server = server_factory(port=free_port()).start()  # a port the flags name, not --port 0
    assert server.process is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLYTICS_")}
    env["TLYTICS_PORT"] = str(free_port())  # the checker's own environment points elsewhere
    command = [sys.executable, "-m", "tlytics.healthcheck", "--pid", str(server.process.pid)]
    assert subprocess.run(command, env=env, timeout=60, capture_output=True).returncode == 0
    server.kill()
    assert subprocess.run(command, env=env, timeout=60, capture_output=True).returncode == 1


@pytest.mark.parametrize("ignored", [".venv", ".git", "**/*.db", "**/*.spool", "**/*.sqlite", "**/*.db-*"])
def test_dockerignore_keeps_local_state_out(ignored: str) -> None:
    assert ignored in (ROOT / ".dockerignore").read_text().split()
