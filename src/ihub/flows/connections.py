"""The client side of `http` connections: URLs, every auth type, OAuth2 client-credentials tokens, redaction.

A connection at runtime is `{"type": "http", "config": {...}, "secrets": {...}}` with presets already expanded
(see ihub.projects.service.connection_runtime). Config and secrets are read as one mapping of fields:
baseUrl, authType (none | basic | bearer | api_key | oauth2_client_credentials | oauth2_authorization_code),
username, password, token, apiKey, apiKeyName, apiKeyIn (header | query), clientId, clientSecret, tokenUrl, scope,
headers; for oauth2_authorization_code also refreshToken and expiresAt (the tokens a person's Connect obtained,
refreshed through `TokenCache.user_tokens`, which the engine provides: ihub.oauth.refresh).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import httpx

from ihub.egress import DeadlineExceeded, EgressRefused, FetchLimits, ResponseTooLarge, fetch
from ihub.observability import metrics

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


class UserTokens(Protocol):
    """Access tokens of connections a person authorized: stored sealed on the connection, refreshed in the database
    (one refresh per connection at a time across processes). Implemented by ihub.oauth.refresh."""

    async def access_token(
        self, http: httpx.AsyncClient, runtime: dict[str, Any], limits: FetchLimits, *, force: bool = False
    ) -> str:
        """A usable access token, refreshed first when it expires soon (or when `force`: the target answered
        401 to it). Updates `runtime` in place. Raises ConnectionError_ (kind needs_reconnect when the provider
        refused the refresh)."""
        ...


class TokenCache:
    """OAuth2 client-credentials tokens per (token URL, client id, scope), kept until shortly before expiry;
    and, through `user_tokens`, the authorization-code tokens of connections a person connected."""

    def __init__(self, user_tokens: UserTokens | None = None) -> None:
        self.user_tokens = user_tokens
        self._tokens: dict[tuple[str, str, str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str, str, str], asyncio.Lock] = {}

    def invalidate(self, fields: dict[str, Any]) -> None:
        self._tokens.pop(self._key(fields), None)

    @staticmethod
    def _key(fields: dict[str, Any]) -> tuple[str, str, str, str]:
        # The secret is part of the key: a connection that knows only another's (public) token URL and client id
        # must fetch, and fail, instead of being handed the cached token.
        secret = hashlib.sha256(str(fields.get("clientSecret", "")).encode()).hexdigest()
        return (str(fields.get("tokenUrl", "")), str(fields.get("clientId", "")), secret, str(fields.get("scope", "")))

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
            try:
                token, expires_in = await self._fetch(http, fields, limits)
            except ConnectionError_ as error:
                metrics.refresh_failed("client_credentials", error.kind)
                raise
            metrics.connection_refresh("client_credentials", "refreshed")
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


# A shorter secret cannot be told apart from ordinary text: redacting it would erase every "abc" of a record.
MIN_REDACTED_LENGTH = 4


def secret_values(runtime: dict[str, Any]) -> list[str]:
    """The values redaction must know of a connection: its secrets, and the `user:password` pair."""
    values = [v for v in (runtime.get("secrets") or {}).values() if isinstance(v, str)]
    fields = fields_of(runtime)
    user, password = fields.get("username"), fields.get("password")
    if isinstance(user, str) and isinstance(password, str):
        values.append(f"{user}:{password}")
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


_DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers that route a request to another virtual host than its URL names (on a shared front end or proxy, to
# another tenant's server): never set beside a connection's credentials, neither by the connection nor a step.
ROUTING_HEADERS = frozenset({"host", "forwarded", "x-forwarded-host", "x-original-url", "x-rewrite-url"})


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) as the HTTP client will connect, default port made explicit; None if unusable.

    Parsed by httpx, the parser that sends the request, so that no parser difference (`https://a\\@b/`,
    `https://a#@b/`) can make the check see one host and the client connect to another.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed.host:
        return None
    return scheme, parsed.host.lower().rstrip("."), parsed.port or _DEFAULT_PORTS[scheme]


def same_origin(a: str, b: str) -> bool:
    first, second = origin(a), origin(b)
    return first is not None and first == second


async def prepare_auth(
    http: httpx.AsyncClient, tokens: TokenCache, runtime: dict[str, Any], target_url: str, limits: FetchLimits
) -> PreparedAuth:
    """Headers/params that authenticate a request to `target_url` (only to the connection's own origin)."""
    fields = fields_of(runtime)
    auth = PreparedAuth(secrets=secret_values(runtime))
    base = str(fields.get("baseUrl") or "")
    if not same_origin(base, target_url):
        # Nothing of a connection (auth, its extra headers) goes anywhere but the origin it was entered for:
        # a step's absolute `url` or `path` elsewhere, or a connection without a base URL, gets none of it.
        return auth
    extra = fields.get("headers")
    if isinstance(extra, dict):
        routing = ROUTING_HEADERS & {str(name).strip().lower() for name in extra}
        if routing:  # refused when entered; a row stored before that rule, or edited directly, gets here
            raise ConnectionError_(f"the connection's header {min(routing)!r} is not allowed beside its credentials")
        auth.headers.update({str(k): str(v) for k, v in extra.items()})
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
    elif kind == "oauth2_authorization_code":
        if tokens.user_tokens is None:
            raise ConnectionError_("this process cannot refresh OAuth2 authorization-code tokens")
        token = await tokens.user_tokens.access_token(http, runtime, limits)
        auth.secrets.append(token)
        auth.headers["Authorization"] = f"Bearer {token}"
    else:
        raise ConnectionError_(f"unknown authType {kind!r}")
    return auth


def _base64_cores(raw: bytes) -> list[str]:
    """The base64 characters that depend on `raw` alone, for each of the three alignments it can have inside a
    longer encoded string (`user:password`, a JSON document, ...); padding and edge characters dropped."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        first = -(-offset * 8 // 6)  # the first character made of the secret's bits only
        last = (offset + len(raw)) * 8 // 6  # one past the last such character
        cores.append(encoded[first:last])
    return cores


def _percent_pattern(encoded: str) -> str:
    """A regex for a percent-encoded form, whatever case the encoder used for its hex digits."""
    parts = re.split(r"(%[0-9A-F]{2})", encoded)
    return "".join(
        "%" + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in part[1:])
        if part.startswith("%") and len(part) == 3
        else re.escape(part)
        for part in parts
    )


def secret_forms(secret: str) -> list[str]:
    """Regexes for a secret as a target may echo it: itself, base64 at any alignment (so inside a `Basic` pair),
    standard or URL-safe, URL-encoded (quote, quote_plus, either hex case), JSON- and HTML-escaped, hex."""
    raw = secret.encode()
    literal = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
        raw.hex(),
        raw.hex().upper(),
    }
    cores = _base64_cores(raw)
    # A core shorter than this would match unrelated base64; a secret that short still has its literal forms.
    literal |= {c for core in cores for c in (core, core.replace("+", "-").replace("/", "_")) if len(core) >= 6}
    patterns = {re.escape(form) for form in literal if form}
    for encoded in (quote(secret, safe=""), quote(secret), quote_plus(secret)):
        patterns.add(_percent_pattern(encoded))
    return sorted(patterns, key=len, reverse=True)


@lru_cache(maxsize=256)
def _redaction_pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    forms = {form for secret in secrets for form in secret_forms(secret)}
    if not forms:
        return None
    # One alternation, longest first: a secret containing another is replaced whole, never leaving a fragment.
    # REDACTED itself comes first and is replaced by itself, so that redacting twice changes nothing even for a
    # secret that happens to be part of it ("dact").
    return re.compile("|".join([re.escape(REDACTED), *sorted(forms, key=len, reverse=True)]))


def _redactable(secrets: Iterable[str]) -> frozenset[str]:
    return frozenset(s for s in secrets if isinstance(s, str) and len(s) >= MIN_REDACTED_LENGTH)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret in `secrets`, in every form `secret_forms` knows, replaced by REDACTED."""
    pattern = _redaction_pattern(_redactable(secrets))
    return text if pattern is None else pattern.sub(REDACTED, text)


def redact_value(value: Any, secrets: Iterable[str]) -> Any:
    """A JSON-like value with every string (keys included) passed through `redact_text`; a number whose digits
    contain a secret becomes REDACTED. The one redaction for everything the engine stores."""
    pattern = _redaction_pattern(_redactable(secrets))
    if pattern is None:
        return value

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return pattern.sub(REDACTED, item)
        if isinstance(item, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        if isinstance(item, int | float) and not isinstance(item, bool) and pattern.search(str(item)):
            return REDACTED
        return item

    return walk(value)


def redact_headers(headers: dict[str, str], extra_names: set[str] | None = None) -> dict[str, str]:
    names = SENSITIVE_HEADERS | {n.lower() for n in (extra_names or set())}
    return {k: (REDACTED if k.lower() in names else v) for k, v in headers.items()}
