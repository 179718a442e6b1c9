"""`python -m tlytics.healthcheck [--pid N]`: exit 0 when the local server answers /health with 200.

For container health checks: it needs no curl or wget. It asks the address the server really
listens on: in a container the server is PID 1 (the image's exec-form entry point), so its
command line and environment are read from /proc/1 and parsed exactly as the server parsed
them, so `--port 9000` in a compose `command:` or a `TLYTICS_HOST` of one interface is followed.
When PID N is not a Tlytics server (outside a container), this process's own environment is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}


def _server_command(pid: int) -> tuple[list[str], dict[str, str]] | None:
    """The flags and environment of process `pid` when it is `tlytics` (console script or
    `python -m tlytics`), else None."""
    try:
        words = [w.decode(errors="replace") for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if w]
        raw_environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    flags: list[str] | None = None
    if words and Path(words[0]).name == "tlytics":
        flags = words[1:]
    elif len(words) >= 3 and words[1:3] == ["-m", "tlytics"]:
        flags = words[3:]
    elif len(words) >= 2 and Path(words[1]).name == "tlytics":  # python /usr/local/bin/tlytics
        flags = words[2:]
    if flags is None:
        return None
    environment = dict(item.decode(errors="replace").partition("=")[::2] for item in raw_environment if b"=" in item)
    return flags, environment


def server_url(flags: list[str], environ: Mapping[str, str]) -> str:
    """The /health URL of a server started with these flags and this environment."""
    from tlytics.cli import parse_settings  # the server's own parsing: flag wins, same defaults

    settings, _ = parse_settings(flags, environ)
    host = "127.0.0.1" if settings.host in _ANY_ADDRESS else settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/health"


def _causes(answer: urllib.error.HTTPError) -> list[str]:
    """The causes a /health answer names, if it names any."""
    try:
        causes = json.loads(answer.read(65536)).get("causes")
    except (OSError, ValueError, AttributeError):
        return []
    return [str(cause) for cause in causes] if isinstance(causes, list) else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlytics.healthcheck", description=__doc__)
    parser.add_argument("--pid", type=int, default=1, help="the server's process id (default 1: a container's)")
    args = parser.parse_args(argv)
    found = _server_command(args.pid)
    flags, environment = found if found is not None else ([], dict(os.environ))
    try:
        url = server_url(flags, environment)
    except SystemExit:
        sys.stderr.write("unhealthy: cannot tell the server's address from its flags and environment\n")
        return 1
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        # A 503 says why in its causes (e.g. store_unreachable): shown by `docker inspect`.
        sys.stderr.write(f"unhealthy: {url}: {exc.code} {', '.join(_causes(exc)) or exc.reason}\n")
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        sys.stderr.write(f"unhealthy: {url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
