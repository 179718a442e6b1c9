"""Network options of the client: the proxy environment variables (HTTP_PROXY, HTTPS_PROXY,
NO_PROXY), extra headers, a CA bundle or an SSL context for https."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tests.fake_server import FakeServer
from tests.helpers import ServerProcess, fast_config
from tests.shared_server import StoredSince
from tlytics import Client
from tlytics.client.transport import NetworkOptions, Transport
from tlytics.errors import ServerUnreachable

# A name that resolves nowhere: only a proxy can deliver to it.
UNREACHABLE_URL = "http://tlytics-behind-proxy.invalid:8081"


def test_http_proxy_from_the_environment_carries_the_events(
    shared_server: ServerProcess, stored_since: StoredSince, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = shared_server  # takes absolute-form requests like a proxy
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with Client(fast_config(UNREACHABLE_URL, tmp_path / "spool")) as client:
        sent = client.emit_and_send("through_proxy")
        assert client.flush(timeout=30) is True
    proxy.wait_drained()
    assert stored_since.ids() == [sent]


def test_no_proxy_bypasses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "tlytics-behind-proxy.invalid")
    transport = Transport(UNREACHABLE_URL, timeout_s=2, write_key=None, gzip_min_bytes=4096)
    with pytest.raises(ServerUnreachable):  # went straight for the name, which resolves nowhere
        transport.post_batch(b"[]")


def test_extra_headers_are_sent_with_every_request(tmp_path: Path) -> None:
    fake = FakeServer().start()
    try:
        config = fast_config(fake.url, tmp_path / "spool", headers={"X-Team": "growth"}, write_key="secret-key-1234")
        with Client(config) as client:
            client.emit("a")
            assert client.flush(timeout=30) is True
        headers = fake.received[0].headers
        assert headers["x-team"] == "growth"
        assert headers["authorization"] == "Bearer secret-key-1234"  # not overridden by the extras
    finally:
        fake.stop()


def test_an_ssl_context_or_ca_bundle_is_what_https_verifies_with(tmp_path: Path) -> None:
    context = ssl.create_default_context()
    given = Transport(
        "https://example.invalid",
        timeout_s=1,
        write_key=None,
        gzip_min_bytes=1,
        network=NetworkOptions(ssl_context=context),
    )
    assert given._ssl_context() is context
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    with pytest.raises(ssl.SSLError):  # the bundle is read: a bad one fails loudly
        Transport(
            "https://example.invalid",
            timeout_s=1,
            write_key=None,
            gzip_min_bytes=1,
            network=NetworkOptions(ca_bundle=str(bundle)),
        )._ssl_context()
