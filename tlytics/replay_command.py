"""The `tlytics-replay` command's entry point: without the server extra (click, msgspec…) it
says which extra to install in one line, as the `tlytics` command does, instead of a traceback."""

from __future__ import annotations

import sys

SERVER_EXTRA_MISSING = "tlytics-replay needs the server extra: pip install 'tlytics[server]'"


def main() -> None:
    try:
        from tlytics.replay import main as replay_main
    except ImportError as exc:
        if (exc.name or "tlytics").partition(".")[0] == "tlytics":
            raise  # a module of our own missing is a bug, not an install choice
        sys.stderr.write(f"tlytics-replay: {SERVER_EXTRA_MISSING} (no module named {exc.name!r})\n")
        sys.exit(1)
    replay_main()
