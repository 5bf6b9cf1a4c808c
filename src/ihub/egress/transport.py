"""An httpx transport whose every TCP connection passes the egress policy first.

httpcore opens a connection through a network backend, `connect_tcp(host, port)`, and starts TLS afterwards
with `server_hostname` set to the URL's host. The backend here resolves the host once, checks every address
it resolved to, and connects to a checked address. TLS (SNI and certificate verification) and the Host
header still use the name from the URL, and there is no second resolution for DNS rebinding to swap.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from ihub.egress.policy import EgressPolicy, IPAddress, parse_ip
from ihub.logs import silence_sensitive_loggers

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the system resolver: /etc/hosts, then DNS)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = parse_ip(str(sockaddr[0]))
        if address is not None and address not in addresses:
            addresses.append(address)
    return addresses


class PolicyNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolve, check every address, connect to a checked one; refusals raise EgressRefused before any
    connection attempt."""

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = parse_ip(host)
        try:
            addresses = [literal] if literal is not None else await asyncio.wait_for(self.resolver(host, port), timeout)
        except (OSError, UnicodeError) as error:
            raise httpcore.ConnectError(f"cannot resolve host: {error}") from None
        except TimeoutError:
            raise httpcore.ConnectTimeout("timed out resolving host") from None
        if not addresses:
            raise httpcore.ConnectError("host resolved to no address")
        for address in addresses:
            self.policy.check_address(host, address)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not an egress target")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class EgressTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (TLS, pooling, HTTP/1.1) over the policy-checking network backend."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("verify", shared_tls_context())
        super().__init__(trust_env=False, **kwargs)
        limits: httpx.Limits = kwargs.get("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20))
        # httpx has no public way to hand its pool a network backend; rebuild the pool it made with one.
        # The assert makes an httpx release that changes this shape fail loudly instead of bypassing the policy.
        assert isinstance(self._pool, httpcore.AsyncConnectionPool)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._pool._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PolicyNetworkBackend(policy, resolver, inner),
        )


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One TLS client context per process (httpx's default: certifi's CA bundle, certificate and host name
    checks). Building one loads the CA bundle, 10-20 ms of CPU on the event loop: done per JWKS fetch, 8 clients
    whose JWKS host dripped took GET /api/v1/org's p99 to 2.4x quiet (bench/isolation.py, slow-jwks). An
    SSLContext is safe to share between connections."""
    return httpx.create_ssl_context()


def egress_client(
    policy: EgressPolicy, *, timeout: float = 30.0, resolver: Resolver = resolve, **transport: Any
) -> httpx.AsyncClient:
    """An httpx client for tenant-chosen URLs: the egress policy on every connection, no redirects
    followed (a redirect is just an answer), no proxy or credentials taken from the environment, and
    httpx's own request log (full URLs at INFO) silenced."""
    silence_sensitive_loggers()
    return httpx.AsyncClient(
        transport=EgressTransport(policy, resolver=resolver, **transport),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
    )
