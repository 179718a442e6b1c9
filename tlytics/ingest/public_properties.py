"""The parser of `--public-property` (a settings value, apart from the stats scope's rules so
that the settings import nothing of the HTTP side)."""

from __future__ import annotations

import re

_DATA_PROPERTY = re.compile(r"data\.([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)\Z")


def public_property(value: str) -> str:
    """A property a stats key may break down and filter by: `data.country` gives `country`."""
    match = _DATA_PROPERTY.match(value.strip())
    if match is None:
        raise ValueError("a public property looks like data.<property>, e.g. data.country")
    return match[1]
