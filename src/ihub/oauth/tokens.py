"""RFC 6749 token requests of a client: the authorization-code exchange (§4.1.3) and the refresh (§6), each
through the egress policy, and the provider's answer read as a token (§5.1) or an error (§5.2)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ihub.egress import DeadlineExceeded, EgressRefused, FetchLimits, ResponseTooLarge, fetch
from ihub.templates.oauth_providers import OAuthProvider

# §5.2 errors that say this grant is gone for good: only a person consenting again gets a new one.
GRANT_GONE = frozenset({"invalid_grant", "unauthorized_client", "invalid_scope"})


@dataclass(frozen=True)
class Client:
    """The client as the token endpoint sees it."""

    client_id: str
    client_secret: str
    token_url: str
    auth_method: str  # client_secret_basic | client_secret_post


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str | None
    expires_at: float | None  # epoch seconds, from expires_in; None when the provider gives none

    def secrets(self) -> dict[str, Any]:
        return {"accessToken": self.access_token, "refreshToken": self.refresh_token, "expiresAt": self.expires_at}


class TokenRefused(Exception):
    """The token endpoint answered with a §5.2 error (`error`, optional `error_description`)."""

    def __init__(self, error: str, description: str | None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class TokenUnavailable(Exception):
    """The token endpoint could not be asked or gave no usable answer (network, timeout, 5xx, not JSON)."""


def client_for(provider: OAuthProvider, client_id: str, client_secret: str, token_url: str) -> Client:
    return Client(client_id, client_secret, token_url, provider.client_auth)


def _client_authentication(client: Client, form: dict[str, str]) -> dict[str, str]:
    """§2.3.1: the client's credentials in an HTTP Basic header (form-urlencoded first, as the section says)
    or, for providers that want them there, in the request body."""
    if client.auth_method == "client_secret_post":
        form.update(client_id=client.client_id, client_secret=client.client_secret)
        return {}
    pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _read_token_response(response: Any, now: float, previous_refresh: str | None) -> Tokens:
    """§5.1 success or §5.2 error. Slack answers errors with 200 and `{"ok": false, "error": ...}`."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise TokenUnavailable(f"the token endpoint answered {response.status_code} without a JSON object")
    if isinstance(payload.get("error"), str) and (response.status_code >= 400 or "access_token" not in payload):
        description = payload.get("error_description")
        raise TokenRefused(payload["error"], description if isinstance(description, str) else None)
    if response.status_code >= 500:
        raise TokenUnavailable(f"the token endpoint answered {response.status_code}")
    if response.status_code != 200 or not isinstance(payload.get("access_token"), str):
        raise TokenUnavailable(f"the token endpoint answered {response.status_code} without an access_token")
    expires_at: float | None = None
    expires_in = payload.get("expires_in")
    if isinstance(expires_in, int | float | str):
        try:
            expires_at = now + float(expires_in)
        except ValueError:
            expires_at = None
    # §6: "the authorization server MAY issue a new refresh token"; when it does not, the old one stays valid.
    refresh = payload.get("refresh_token")
    return Tokens(payload["access_token"], refresh if isinstance(refresh, str) else previous_refresh, expires_at)


async def _request(
    http: httpx.AsyncClient, client: Client, form: dict[str, str], limits: FetchLimits, previous_refresh: str | None
) -> Tokens:
    headers = {"Accept": "application/json", **_client_authentication(client, form)}
    started = time.time()
    try:
        response = await fetch(
            http,
            "POST",
            client.token_url,
            deadline=limits.deadline,
            max_bytes=limits.max_bytes,
            data=form,
            headers=headers,
        )
    except EgressRefused as error:
        raise TokenUnavailable(f"token endpoint not called: {error}") from None
    except DeadlineExceeded as error:
        raise TokenUnavailable(f"token endpoint timed out: {error}") from None
    except ResponseTooLarge as error:
        raise TokenUnavailable(f"token endpoint answer refused: {error}") from None
    except httpx.InvalidURL:
        raise TokenUnavailable("the token URL is not a valid URL") from None
    except httpx.HTTPError as error:
        raise TokenUnavailable(f"token endpoint unreachable: {type(error).__name__}") from None
    return _read_token_response(response, started, previous_refresh)


async def exchange_code(
    http: httpx.AsyncClient, client: Client, code: str, redirect_uri: str, verifier: str, limits: FetchLimits
) -> Tokens:
    """§4.1.3 with RFC 7636 §4.5: the code, the same redirect_uri as the authorize request, the verifier."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    return await _request(http, client, form, limits, None)


async def refresh(http: httpx.AsyncClient, client: Client, refresh_token: str, limits: FetchLimits) -> Tokens:
    """§6: a new access token (and maybe a new refresh token, which then replaces the old one)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await _request(http, client, form, limits, refresh_token)
