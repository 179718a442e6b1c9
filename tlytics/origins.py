"""Web origins as `--cors-origin` takes them: the ground floor of the CORS rules (`cors`),
importable by the settings without importing the server."""

from __future__ import annotations

import re

# scheme://host[:port], nothing after: what a browser sends in its Origin header.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.\-]*://[^/?#\s@]+")
ANY_ORIGIN = "*"


def cors_origin(value: str) -> str:
    """An origin a page may send events from (`https://shop.example`, or `*` for any), exactly
    as its browser names it: lower-case scheme and host, no path and no trailing slash."""
    origin = value.strip()
    if origin == ANY_ORIGIN:
        return origin
    if not _ORIGIN.fullmatch(origin) or origin != origin.lower():
        raise ValueError(
            f"{value!r} is not an origin: write scheme://host[:port] in lower case, without a path"
            " (e.g. https://shop.example), or * for any"
        )
    return origin
