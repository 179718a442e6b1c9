"""Which client address a request event records: the peer's or, behind a proxy you run, the
first X-Forwarded-For address; full, truncated to its network (the default, so an event does
not identify a person), or not at all."""

from __future__ import annotations

import ipaddress
from typing import Literal, get_args

RecordIP = Literal["full", "truncated", "none"]
RECORD_IP_CHOICES: tuple[str, ...] = get_args(RecordIP)

# A /24 is a street's worth of IPv4 addresses, a /48 one site's IPv6 allocation: enough to
# tell networks and countries apart, not people.
IPV4_KEPT_PREFIX = 24
IPV6_KEPT_PREFIX = 48


def checked_record_ip(value: str) -> RecordIP:
    """`value` if it is a record_ip choice; ValueError naming the choices otherwise."""
    if value not in RECORD_IP_CHOICES:
        raise ValueError(f"record_ip must be one of {', '.join(RECORD_IP_CHOICES)}, not {value!r}")
    return value  # type: ignore[return-value]


def first_forwarded(value: str | None) -> str | None:
    """The first address of an X-Forwarded-For header: the client as your proxy saw it."""
    return value.split(",")[0].strip() or None if value else None


def _parsed(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in `address`, also with a port ("1.2.3.4:80", "[::1]:80"); None if none."""
    candidates = [address]
    if address.startswith("[") and "]" in address:
        candidates.append(address[1 : address.index("]")])
    elif address.count(":") == 1:
        candidates.append(address.split(":", 1)[0])
    for candidate in candidates:
        try:
            parsed = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            return parsed.ipv4_mapped
        return parsed
    return None


def truncated_ip(address: str) -> str | None:
    """The network of `address` (IPv4 /24, IPv6 /48) as an address, e.g. 203.0.113.0;
    None when it is not an IP address (a unix socket, a test client's name), since what
    cannot be truncated could still identify someone."""
    parsed = _parsed(address)
    if parsed is None:
        return None
    prefix = IPV4_KEPT_PREFIX if parsed.version == 4 else IPV6_KEPT_PREFIX
    dropped_bits = parsed.max_prefixlen - prefix
    # Integer masking: a tenth of the cost of building an ip_network, on every request.
    return str(type(parsed)(int(parsed) >> dropped_bits << dropped_bits))


def recorded_ip(
    peer: str | None, forwarded_for: str | None, *, trust_forwarded: bool, record_ip: RecordIP
) -> str | None:
    """The client_ip field of an event under the `record_ip` policy."""
    if record_ip == "none":
        return None
    address = (first_forwarded(forwarded_for) if trust_forwarded else None) or peer
    if not address:
        return None
    return address if record_ip == "full" else truncated_ip(address)
