"""`python -m tlytics.healthcheck`: exit 0 when the local server answers /health with 200.

For container health checks: it needs only the Python standard library, not curl or wget.
It reads the port from TLYTICS_PORT, like the server.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from tlytics.ingest.settings import DEFAULT_PORT


def main() -> int:
    port = os.environ.get("TLYTICS_PORT", str(DEFAULT_PORT))
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        sys.stderr.write(f"unhealthy: {url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
