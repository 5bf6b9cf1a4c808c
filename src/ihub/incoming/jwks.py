"""Keys published by a client at its JWKS URL: fetched with a short timeout, cached, refetched on an
unknown kid at most once a minute, and kept when a fetch fails (a flaky JWKS host must not lock the
client out of keys it already proved)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ihub.incoming.keys import UnusableKey, algorithm_for, usable_jwk

log = logging.getLogger("ihub.incoming.jwks")

FETCH_TIMEOUT_SECONDS = 3.0
REFETCH_INTERVAL_SECONDS = 60.0
MAX_JWKS_BYTES = 64 * 1024
LOOPBACK_NAMES = {"localhost"}


def check_jwks_url(url: str) -> str:
    """https anywhere; plain http only to this machine (local test servers)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnusableKey("jwksUrl must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise UnusableKey("jwksUrl must use https:// (plain http is allowed only for loopback hosts)")
    return url.strip()


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class JwksEntry:
    # kid -> (public jwk, algorithm); keys without a kid get their position as a name.
    keys: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    fetched: bool = False
    last_attempt: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JwksCache:
    def __init__(self, timeout: float = FETCH_TIMEOUT_SECONDS, interval: float = REFETCH_INTERVAL_SECONDS) -> None:
        self.timeout = timeout
        self.interval = interval
        self._entries: dict[str, JwksEntry] = {}

    def _entry(self, url: str) -> JwksEntry:
        return self._entries.setdefault(url, JwksEntry())

    def cached(self, url: str) -> dict[str, tuple[dict[str, Any], str]]:
        """What is cached now, without fetching (for listing on the trigger page)."""
        entry = self._entries.get(url)
        return entry.keys if entry else {}

    async def keys(self, url: str, want_kid: str | None = None) -> dict[str, tuple[dict[str, Any], str]]:
        """The cached keys; fetched first if never fetched, or refetched when `want_kid` is unknown and the
        last attempt is older than the interval."""
        entry = self._entry(url)
        needs = not entry.fetched or (want_kid is not None and want_kid not in entry.keys)
        if needs and time.monotonic() - entry.last_attempt >= self.interval:
            async with entry.lock:
                # Another request may have fetched while this one waited.
                still = not entry.fetched or (want_kid is not None and want_kid not in entry.keys)
                if still and time.monotonic() - entry.last_attempt >= self.interval:
                    await self._fetch(url, entry)
        return entry.keys

    async def _fetch(self, url: str, entry: JwksEntry) -> None:
        entry.last_attempt = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
                response = await http.get(url, headers={"Accept": "application/json"})
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            document = response.json()
            entries = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(entries, list):
                raise ValueError("no 'keys' array")
        except (httpx.HTTPError, ValueError) as error:
            log.warning("JWKS fetch from %s failed (cached keys kept): %s", url, error)
            return
        keys: dict[str, tuple[dict[str, Any], str]] = {}
        for index, jwk in enumerate(entries):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                public = usable_jwk(jwk)
                alg = algorithm_for(public, jwk.get("alg"))
            except (UnusableKey, ValueError) as error:
                log.warning("JWKS %s: key %s skipped: %s", url, jwk.get("kid", index), error)
                continue
            kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else f"#{index}"
            keys[kid] = (public, alg)
        entry.keys = keys
        entry.fetched = True
