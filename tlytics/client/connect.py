"""The transport a client Config names: its own (Config.transport, a MockTransport in tests)
or an HTTP connection with the Config's URL, timeout, write key, gzip threshold and network
options. Apart from transport.py so that the transport does not depend on Config, which
names the transport type."""

from __future__ import annotations

from tlytics.client.config import Config, seconds
from tlytics.client.transport import BaseTransport, NetworkOptions, Transport


def http_transport_for(config: Config, *, timeout_s: float | None = None) -> Transport:
    """An HTTP transport for `config` (with a shorter request timeout if given)."""
    return Transport(
        config.server_url,
        timeout_s=seconds(config.timeout) if timeout_s is None else timeout_s,
        write_key=config.write_key,
        gzip_min_bytes=config.gzip_min_bytes,
        network=NetworkOptions(
            ca_bundle=str(config.ca_bundle) if config.ca_bundle is not None else None,
            ssl_context=config.ssl_context,
            headers=dict(config.headers or {}),
        ),
    )


def transport_for(config: Config) -> BaseTransport:
    """The transport a Client with `config` sends through: Config.transport if given (shared,
    so it must be thread-safe, as MockTransport is), else a new HTTP connection."""
    if config.transport is not None:
        return config.transport
    return http_transport_for(config)
