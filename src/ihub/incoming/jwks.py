"""Keys published by a client at its JWKS URL: fetched under a total deadline and a streamed size cap,
through the egress policy, cached, refetched on an unknown kid at most once a minute, and kept when a fetch
fails (a flaky JWKS host must not lock the client out of keys it already proved).

Callers fetch outside any database transaction (see `needs_fetch`): a slow JWKS host must only slow
its own client's token requests, never hold the database connection others wait for."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ihub.egress import (
    DeadlineExceeded,
    EgressPolicy,
    EgressRefused,
    ResponseTooLarge,
    egress_client,
    fetch,
)
from ihub.egress.policy import parse_ip
from ihub.egress.transport import Resolver, resolve
from ihub.incoming.keys import UnusableKey, algorithm_for, usable_jwk

log = logging.getLogger("ihub.incoming.jwks")

FETCH_TIMEOUT_SECONDS = 3.0
REFETCH_INTERVAL_SECONDS = 60.0
# A JWK Set of a handful of RSA keys is a few KiB; 64 KiB leaves room for rotation and stays cheap to hold.
MAX_JWKS_BYTES = 64 * 1024


def check_jwks_url(url: str, policy: EgressPolicy) -> str:
    """https anywhere the egress policy allows; plain http only to this machine (local test servers).
    A name is resolved and checked again on every fetch: here only what needs no DNS is refused."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - validates the port (a bad one raises ValueError)
    except ValueError:
        raise UnusableKey("jwksUrl must be an absolute https:// URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnusableKey("jwksUrl must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise UnusableKey("jwksUrl must use https:// (plain http is allowed only for loopback hosts)")
    try:
        policy.check_host(parts.hostname)
    except EgressRefused as error:
        raise UnusableKey(f"jwksUrl: {error}") from None
    return url.strip()


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    address = parse_ip(host)
    return address is not None and address.is_loopback


def jwks_entries(document: Any) -> list[Any]:
    """The `keys` array of a JWKS document; ValueError if there is none."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the JWKS document has no 'keys' array")
    return entries


@dataclass
class JwksEntry:
    # kid -> (public jwk, algorithm); keys without a kid get their position as a name.
    keys: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    fetched: bool = False
    last_attempt: float = float("-inf")
    # Why the last fetch failed, in words a client developer can act on (no addresses, no URL).
    last_error: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JwksCache:
    def __init__(
        self,
        policy: EgressPolicy,
        timeout: float = FETCH_TIMEOUT_SECONDS,
        interval: float = REFETCH_INTERVAL_SECONDS,
        max_bytes: int = MAX_JWKS_BYTES,
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.interval = interval
        self.max_bytes = max_bytes
        self.resolver: Resolver = resolve  # how host names become addresses (tests give a stub: no DNS)
        self._entries: dict[str, JwksEntry] = {}

    def _entry(self, url: str) -> JwksEntry:
        return self._entries.setdefault(url, JwksEntry())

    def cached(self, url: str) -> dict[str, tuple[dict[str, Any], str]]:
        """What is cached now, without fetching (for listing on the trigger page)."""
        entry = self._entries.get(url)
        return entry.keys if entry else {}

    def last_error(self, url: str) -> str | None:
        entry = self._entries.get(url)
        return entry.last_error if entry else None

    def needs_fetch(self, url: str, want_kid: str | None = None) -> bool:
        """Whether `keys` would go to the network (the caller then ends its transaction first)."""
        entry = self._entry(url)
        needs = not entry.fetched or (want_kid is not None and want_kid not in entry.keys)
        return needs and time.monotonic() - entry.last_attempt >= self.interval

    async def keys(self, url: str, want_kid: str | None = None) -> dict[str, tuple[dict[str, Any], str]]:
        """The cached keys; fetched first if never fetched, or refetched when `want_kid` is unknown and the
        last attempt is older than the interval."""
        entry = self._entry(url)
        if self.needs_fetch(url, want_kid):
            async with entry.lock:
                # Another request may have fetched while this one waited.
                if self.needs_fetch(url, want_kid):
                    await self._fetch(url, entry)
        return entry.keys

    async def _fetch(self, url: str, entry: JwksEntry) -> None:
        entry.last_attempt = time.monotonic()
        try:
            async with egress_client(self.policy, timeout=self.timeout, resolver=self.resolver) as http:
                response = await fetch(
                    http,
                    "GET",
                    url,
                    deadline=self.timeout,
                    max_bytes=self.max_bytes,
                    headers={"Accept": "application/json"},
                )
            if response.status_code != 200:
                raise ValueError(f"the JWKS URL answered HTTP {response.status_code}")
            entries = jwks_entries(response.json())
        except EgressRefused as error:
            entry.last_error = f"the JWKS URL is not fetched: the egress policy refuses it ({error.reason})"
        except (DeadlineExceeded, ResponseTooLarge) as error:
            entry.last_error = f"the JWKS URL gave {error}"
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            entry.last_error = f"the JWKS URL could not be fetched ({type(error).__name__})"
        except ValueError as error:
            entry.last_error = str(error) if str(error).startswith("the JWKS") else "the JWKS document is not JSON"
        else:
            entry.last_error = None
        if entry.last_error is not None:
            # The URL stays out of the log (item: nothing from a tenant's outgoing call reaches a log line).
            log.warning("JWKS fetch failed (cached keys kept): %s", entry.last_error)
            return
        keys: dict[str, tuple[dict[str, Any], str]] = {}
        for index, jwk in enumerate(entries):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                public = usable_jwk(jwk)
                alg = algorithm_for(public, jwk.get("alg"))
            except (UnusableKey, ValueError) as error:
                log.warning("JWKS key #%d skipped: %s", index, error)
                continue
            kid = jwk.get("kid")
            if not isinstance(kid, str):
                kid = f"#{index}"
            keys[kid] = (public, alg)
        entry.keys = keys
        entry.fetched = True
