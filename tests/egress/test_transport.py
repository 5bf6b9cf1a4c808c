"""The transport checks the address it connects to. Refusals of non-loopback addresses are proved with a
resolver stub and a network backend that fails the test if a connection is attempted; real connections
only ever go to 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pytest_httpserver import HTTPServer

from ihub.egress import EgressPolicy, EgressRefused, egress_client, fetch
from ihub.egress.policy import IPAddress

pytestmark = pytest.mark.anyio

LOOPBACK = EgressPolicy.from_entries(["127.0.0.0/8"])


def resolving_to(*addresses: str) -> Any:
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        return [ipaddress.ip_address(a) for a in addresses]

    resolver.calls = calls  # type: ignore[attr-defined]
    return resolver


class NoConnections(httpcore.AsyncNetworkBackend):
    """A network backend that fails the test if anything tries to open a connection through it."""

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        pytest.fail(f"a connection to {host}:{port} was attempted")


class Recording(httpcore.AsyncNetworkBackend):
    """The real backend, noting the host every connection is opened to."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.hosts: list[str] = []

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        self.hosts.append(host)
        return await self.inner.connect_tcp(host, port, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.1"], ["169.254.169.254"], ["fd00:ec2::254"], ["93.184.216.34", "10.0.0.1"], ["::ffff:169.254.169.254"]],
    ids=["private", "metadata", "ipv6-metadata", "one-of-several", "mapped"],
)
async def test_a_name_resolving_to_a_refused_address_is_never_connected_to(addresses: list[str]) -> None:
    resolver = resolving_to(*addresses)
    async with egress_client(EgressPolicy(), resolver=resolver, inner=NoConnections()) as http:
        with pytest.raises(EgressRefused, match="resolves to"):
            await fetch(http, "GET", "https://innocent-looking.test/", deadline=5, max_bytes=1024)
    assert resolver.calls == ["innocent-looking.test"]


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/", "http://[::ffff:a9fe:a9fe]/", "http://0xa9fea9fe/latest/meta-data"]
)
async def test_literal_addresses_are_refused_without_dns_or_connection(url: str) -> None:
    resolver = resolving_to("93.184.216.34")
    async with egress_client(EgressPolicy(), resolver=resolver, inner=NoConnections()) as http:
        with pytest.raises(EgressRefused):
            await fetch(http, "GET", url, deadline=5, max_bytes=1024)
    assert resolver.calls == []  # an address in any literal form is checked as it is, never looked up


async def test_default_policy_refuses_loopback_before_connecting(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/").respond_with_data("the hub's own answer")
    port = httpserver.port
    async with egress_client(EgressPolicy(), inner=NoConnections()) as http:
        for host in ("127.0.0.1", "127.1", "2130706433", "[::ffff:127.0.0.1]", "localhost", "0.0.0.0"):
            with pytest.raises(EgressRefused):
                await fetch(http, "GET", f"http://{host}:{port}/", deadline=5, max_bytes=1024)
    assert httpserver.log == []


async def test_connects_to_the_checked_address_and_keeps_the_name_in_host(httpserver: HTTPServer) -> None:
    """The name is resolved once; the connection goes to that IP literal (nothing left to re-resolve),
    while the request still says Host: the name."""
    httpserver.expect_request("/x").respond_with_data("ok")
    resolver, backend = resolving_to("127.0.0.1"), Recording()
    async with egress_client(LOOPBACK, resolver=resolver, inner=backend) as http:
        response = await fetch(http, "GET", f"http://target.test:{httpserver.port}/x", deadline=5, max_bytes=1024)
    assert response.status_code == 200 and response.content == b"ok"
    assert resolver.calls == ["target.test"]
    assert backend.hosts == ["127.0.0.1"]
    request, _ = httpserver.log[0]
    assert request.headers["Host"] == f"target.test:{httpserver.port}"


async def test_rebinding_cannot_swap_the_address_after_the_check() -> None:
    """A resolver that answers loopback (allowed here) first and the metadata address afterwards: the
    connection is opened to the first, checked answer; the second answer is only ever seen by a check."""
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in next(answers)]

    server = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = Recording()
    try:
        async with egress_client(LOOPBACK, resolver=rebinding, inner=backend) as http:
            first = await fetch(
                http, "GET", f"http://rebind.test:{port}/", deadline=5, max_bytes=1024, headers={"Connection": "close"}
            )
            assert first.status_code == 200
            with pytest.raises(EgressRefused):
                await fetch(http, "GET", f"http://rebind.test:{port}/", deadline=5, max_bytes=1024)
    finally:
        server.close()
        await server.wait_closed()
    assert backend.hosts == ["127.0.0.1"]


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls_verifies_the_certificate_and_sends_sni_for_the_name(tmp_path: Path) -> None:
    cert_path, key_path = _certificate(tmp_path, "secure.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    seen_sni: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)  # type: ignore[assignment]
    server = await asyncio.start_server(_answer_ok, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trust = ssl.create_default_context(cafile=str(cert_path))
    try:
        async with egress_client(LOOPBACK, resolver=resolving_to("127.0.0.1"), verify=trust) as http:
            response = await fetch(http, "GET", f"https://secure.test:{port}/", deadline=5, max_bytes=1024)
        assert response.content == b"ok"
        assert seen_sni == ["secure.test"]
        # The same server reached by its address: the certificate is for the name, so verification fails.
        async with egress_client(LOOPBACK, verify=trust) as http:
            with pytest.raises(httpx.ConnectError):
                await fetch(http, "GET", f"https://127.0.0.1:{port}/", deadline=5, max_bytes=1024)
    finally:
        server.close()
        await server.wait_closed()


async def test_redirects_are_answers_not_followed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/go").respond_with_data(
        "", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
    )
    backend = Recording()
    async with egress_client(LOOPBACK, inner=backend) as http:
        response = await fetch(http, "GET", f"http://127.0.0.1:{httpserver.port}/go", deadline=5, max_bytes=1024)
    assert response.status_code == 302
    assert backend.hosts == ["127.0.0.1"]  # the Location was never connected to
