"""The client side of `http` connections: URLs, every auth type, OAuth2 client-credentials tokens, redaction.

A connection at runtime is `{"type": "http", "config": {...}, "secrets": {...}}` with presets already expanded
(see ihub.projects.service.connection_runtime). Config and secrets are read as one mapping of fields:
baseUrl, authType (none | basic | bearer | api_key | oauth2_client_credentials), username, password, token,
apiKey, apiKeyName, apiKeyIn (header | query), clientId, clientSecret, tokenUrl, scope, headers.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ihub.egress import DeadlineExceeded, EgressRefused, FetchLimits, ResponseTooLarge, fetch

REDACTED = "[redacted]"
SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"}


class ConnectionError_(Exception):
    """A connection is missing, not configured, or its auth cannot be completed."""

    def __init__(self, message: str, kind: str = "config") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class PreparedAuth:
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    # Values to scrub from anything recorded (tokens fetched at runtime included).
    secrets: list[str] = field(default_factory=list)


class TokenCache:
    """OAuth2 client-credentials tokens per (token URL, client id, scope), kept until shortly before expiry."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    def invalidate(self, fields: dict[str, Any]) -> None:
        self._tokens.pop(self._key(fields), None)

    @staticmethod
    def _key(fields: dict[str, Any]) -> tuple[str, str, str]:
        return (str(fields.get("tokenUrl", "")), str(fields.get("clientId", "")), str(fields.get("scope", "")))

    async def token(self, http: httpx.AsyncClient, fields: dict[str, Any], limits: FetchLimits) -> str:
        key = self._key(fields)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            token, expires_in = await self._fetch(http, fields, limits)
            # Renew a little early so a token never expires between the check and the call.
            self._tokens[key] = (token, time.monotonic() + max(0.0, expires_in - min(30.0, expires_in / 10)))
            return token

    @staticmethod
    async def _fetch(http: httpx.AsyncClient, fields: dict[str, Any], limits: FetchLimits) -> tuple[str, float]:
        token_url = fields.get("tokenUrl")
        client_id, client_secret = fields.get("clientId"), fields.get("clientSecret")
        if not token_url or not client_id or not client_secret:
            raise ConnectionError_("oauth2_client_credentials needs tokenUrl, clientId and clientSecret")
        form = {"grant_type": "client_credentials"}
        if fields.get("scope"):
            form["scope"] = str(fields["scope"])
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        try:
            response = await fetch(
                http,
                "POST",
                str(token_url),
                deadline=limits.deadline,
                max_bytes=limits.max_bytes,
                data=form,
                headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            )
        except EgressRefused as error:
            raise ConnectionError_(f"token endpoint not called: {error}", "egress") from None
        except DeadlineExceeded as error:
            raise ConnectionError_(f"token endpoint timed out: {error}", "timeout") from None
        except ResponseTooLarge as error:
            raise ConnectionError_(f"token endpoint answer refused: {error}", "too_large") from None
        except httpx.InvalidURL:
            raise ConnectionError_("tokenUrl is not a valid URL") from None
        except httpx.HTTPError as error:
            raise ConnectionError_(f"token endpoint unreachable: {type(error).__name__}", "connect") from None
        if response.status_code != 200:
            raise ConnectionError_(f"token endpoint answered {response.status_code}", "auth")
        try:
            payload = response.json()
            token = str(payload["access_token"])
        except (ValueError, KeyError, TypeError):
            raise ConnectionError_("token endpoint answered without access_token", "auth") from None
        try:
            expires_in = float(payload.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        return token, expires_in


def fields_of(runtime: dict[str, Any]) -> dict[str, Any]:
    return {**(runtime.get("config") or {}), **(runtime.get("secrets") or {})}


def secret_values(runtime: dict[str, Any]) -> list[str]:
    values = [v for v in (runtime.get("secrets") or {}).values() if isinstance(v, str) and len(v) >= 4]
    fields = fields_of(runtime)
    user, password = fields.get("username"), fields.get("password")
    if isinstance(user, str) and isinstance(password, str):
        values.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    return values


def build_url(fields: dict[str, Any], path: str | None, url: str | None) -> str:
    base = str(fields.get("baseUrl") or "").rstrip("/")
    if url:
        return url
    if not base:
        raise ConnectionError_("the connection has no baseUrl")
    if not path:
        return base
    if path.startswith(("http://", "https://")):
        return path
    return base + "/" + path.lstrip("/")


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


async def prepare_auth(
    http: httpx.AsyncClient, tokens: TokenCache, runtime: dict[str, Any], target_url: str, limits: FetchLimits
) -> PreparedAuth:
    """Headers/params that authenticate a request to `target_url` (only to the connection's own origin)."""
    fields = fields_of(runtime)
    auth = PreparedAuth(secrets=secret_values(runtime))
    extra = fields.get("headers")
    if isinstance(extra, dict):
        auth.headers.update({str(k): str(v) for k, v in extra.items()})
    base = str(fields.get("baseUrl") or "")
    if base and not same_origin(base, target_url):
        # Credentials go only where the connection points; a URL elsewhere gets no auth.
        return auth
    kind = fields.get("authType") or "none"
    if kind == "none":
        pass
    elif kind == "basic":
        user, password = fields.get("username"), fields.get("password")
        if user is None or password is None:
            raise ConnectionError_("basic auth needs username and password (is the connection configured?)")
        auth.headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    elif kind == "bearer":
        if not fields.get("token"):
            raise ConnectionError_("bearer auth needs a token (is the connection configured?)")
        auth.headers["Authorization"] = f"Bearer {fields['token']}"
    elif kind == "api_key":
        if not fields.get("apiKey"):
            raise ConnectionError_("api_key auth needs apiKey (is the connection configured?)")
        name = str(fields.get("apiKeyName") or "X-API-Key")
        if fields.get("apiKeyIn", "header") == "query":
            auth.params[name] = str(fields["apiKey"])
        else:
            auth.headers[name] = str(fields["apiKey"])
    elif kind == "oauth2_client_credentials":
        token = await tokens.token(http, fields, limits)
        auth.secrets.append(token)
        auth.headers["Authorization"] = f"Bearer {token}"
    else:
        raise ConnectionError_(f"unknown authType {kind!r}")
    return auth


def redact_text(text: str, secrets: list[str]) -> str:
    for value in sorted(set(secrets), key=len, reverse=True):
        if value:
            text = text.replace(value, REDACTED)
    return text


def redact_headers(headers: dict[str, str], extra_names: set[str] | None = None) -> dict[str, str]:
    names = SENSITIVE_HEADERS | {n.lower() for n in (extra_names or set())}
    return {k: (REDACTED if k.lower() in names else v) for k, v in headers.items()}
