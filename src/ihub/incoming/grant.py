"""RFC 7523 §2.1 JWT bearer grant: a client's signed assertion exchanged for an ihub access token.

Checks follow RFC 7523 §3 and RFC 8725. Every refusal is an RFC 6749 §5.2 error whose description
names the failed check, so a client developer can fix the assertion without asking anyone.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ihub.common.errors import ApiError
from ihub.incoming.access import ClientState, IncomingState, key_expired
from ihub.incoming.keys import import_public_jwk
from ihub.incoming.single_use import spend_of
from ihub.incoming.strictjson import strict_json

GRANT_TYPES = (
    "urn:ihub:jwt:bearer",
    "urn:ietf:params:oauth:grant-type:jwt-ihub:jwt:bearer",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
)
LEEWAY_SECONDS = 60
MAX_LIFETIME_SECONDS = 1200


def invalid_request(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request")


def invalid_grant(message: str) -> ApiError:
    return ApiError(400, message, "invalid_grant")


def invalid_client(message: str) -> ApiError:
    return ApiError(401, message, "invalid_client")


@dataclass(frozen=True)
class IssuedAccessToken:
    access_token: str
    expires_in: int
    client_id: str
    flow_id: int


@dataclass(frozen=True)
class Candidate:
    kid: str
    jwk: dict[str, Any]
    alg: str
    expires_at: float | None = None


def _b64json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:
        raise invalid_grant(f"assertion {what} is not base64url-encoded JSON") from None
    return _json_object(raw, what)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = strict_json(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid_grant(f"assertion {what} is not JSON (RFC 8259)") from None
    if not isinstance(value, dict):
        raise invalid_grant(f"assertion {what} is not a JSON object")
    return value


def check_request(form: Any, max_bytes: int) -> str:
    """The assertion from a token request, after the checks that need no key (RFC 6749 §5.2 codes)."""
    if not isinstance(form, dict):
        raise invalid_request("send a JSON object or a form with grant_type and assertion")
    grant_type = form.get("grant_type")
    if not isinstance(grant_type, str) or not grant_type:
        raise invalid_request("grant_type is required")
    if grant_type not in GRANT_TYPES:
        raise ApiError(
            400, f"grant_type {grant_type[:100]!r} is not supported: use {GRANT_TYPES[0]}", "unsupported_grant_type"
        )
    assertion = form.get("assertion")
    if not isinstance(assertion, str) or not assertion:
        raise invalid_request("assertion is required (the signed JWT)")
    if len(assertion.encode()) > max_bytes:
        raise invalid_request(f"assertion is larger than {max_bytes} bytes")
    return assertion.strip()


def _numeric(claims: dict[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise invalid_grant(f"claim {name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid_grant(f"claim {name} must be a NumericDate (seconds since the epoch)")
    return float(value)


def _string(claims: dict[str, Any], name: str, required: bool) -> str | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise invalid_grant(f"claim {name} is required")
        return None
    if not isinstance(value, str) or not value:
        raise invalid_grant(f"claim {name} must be a non-empty string")
    return value


async def _candidates(state: IncomingState, client: ClientState, kid: str | None) -> list[Candidate]:
    revoked = {key.kid for key in client.keys if key.revoked}
    if kid is not None and kid in revoked:
        raise invalid_grant(f"key {kid!r} of this client is revoked")
    stored = [
        Candidate(key.kid, key.jwk, key.alg, key.expires_at)
        for key in client.keys
        if key.jwk is not None and not key.revoked
    ]
    if kid is not None:
        found = [c for c in stored if c.kid == kid]
        if found:
            return found
    published: list[Candidate] = []
    if client.jwks_url:
        # No database connection is held here, so a slow JWKS endpoint (up to its deadline) blocks nobody.
        keys = await state.jwks.keys(client.jwks_url, want_kid=kid)
        published = [Candidate(name, jwk, alg) for name, (jwk, alg) in keys.items() if name not in revoked]
    if kid is not None:
        found = [c for c in published if c.kid == kid]
        if not found:
            raise invalid_grant(f"kid {kid!r} is not one of this client's keys{_jwks_problem(state, client)}")
        return found
    if not stored and not published:
        raise invalid_grant(
            "this client has no usable key: add or un-revoke one on the trigger page" + _jwks_problem(state, client)
        )
    return stored + published


def _jwks_problem(state: IncomingState, client: ClientState) -> str:
    problem = state.jwks.last_error(client.jwks_url) if client.jwks_url else None
    return f" ({problem})" if problem else ""


def _check_alg(header: dict[str, Any]) -> str:
    """RFC 8725 §2.1: `none` and shared-secret algorithms never verify a client's assertion."""
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise invalid_grant("assertion header has no alg")
    if alg.lower() == "none" or alg.upper().startswith("HS"):
        raise invalid_grant(f"alg {alg[:20]} is refused: sign with the client's private key (RS256)")
    return alg


def _verify_signature(assertion: str, alg: str, candidates: list[Candidate]) -> tuple[Candidate, bytes]:
    """The key that verifies the assertion, and the payload exactly as that verification decoded it."""
    if not candidates:
        raise invalid_grant("this client has no usable key: add or un-revoke one on the trigger page")
    matching = [c for c in candidates if c.alg == alg]
    if not matching:
        expected = ", ".join(sorted({c.alg for c in candidates}))
        raise invalid_grant(f"alg {alg} is not accepted for this client's keys (expected {expected})")
    for candidate in matching:
        try:
            verified = jws.deserialize_compact(assertion, import_public_jwk(candidate.jwk), algorithms=[candidate.alg])
        except (JoseError, ValueError):
            continue
        return candidate, verified.payload
    raise invalid_grant("signature does not verify with any of this client's keys")


def _check_key_expiry(key: Candidate, client: ClientState, now: float) -> None:
    """A stored key past its expiry (the key's `expiresAt`, or IHUB_TRIGGER_KEY_MAX_AGE_DAYS when it was added)
    grants nothing: RFC 6749 §5.2 `invalid_grant`. Checked after the signature, so only the key's holder learns
    that it expired, and with the expiry from the client cache (no query)."""
    if key_expired(key.expires_at, now):
        assert key.expires_at is not None
        at = datetime.fromtimestamp(key.expires_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        raise invalid_grant(
            f"key {key.kid!r} of client {client.client_id} expired at {at}: register a new key for this client "
            f"(rotate on the trigger page, or POST /api/v1/flow/{client.flow_id}/trigger/jwt with iss) and sign "
            "with it"
        )


def _check_times(claims: dict[str, Any], now: float) -> float:
    exp = _numeric(claims, "exp", True)
    iat = _numeric(claims, "iat", True)
    nbf = _numeric(claims, "nbf", False)
    assert exp is not None and iat is not None
    if exp + LEEWAY_SECONDS <= now:
        raise invalid_grant("assertion has expired (exp is in the past)")
    if iat - LEEWAY_SECONDS > now:
        raise invalid_grant("iat is in the future: check the client's clock")
    if nbf is not None and nbf - LEEWAY_SECONDS > now:
        raise invalid_grant("assertion is not valid yet (nbf is in the future)")
    if exp - iat > MAX_LIFETIME_SECONDS:
        raise invalid_grant(f"exp - iat is {int(exp - iat)} s; at most {MAX_LIFETIME_SECONDS} s is allowed")
    return exp


def _check_audience(claims: dict[str, Any], expected: str) -> None:
    aud = claims.get("aud")
    if aud is None:
        raise invalid_grant(f"claim aud is required (use {expected})")
    if isinstance(aud, str):
        audiences = [aud]
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        audiences = aud
    else:
        raise invalid_grant("claim aud must be a string or an array of strings")
    if expected not in audiences:
        raise invalid_grant(f"aud does not match this endpoint: expected {expected}")


@dataclass(frozen=True)
class VerifiedAssertion:
    """An assertion whose signature, claims, client and flow checked out; its jti is not spent yet."""

    client_pk: int
    client_id: str
    flow_id: int
    key_id: str
    jti: str | None
    exp: float


async def verify(
    readers: async_sessionmaker[AsyncSession], state: IncomingState, *, audience: str, form: Any, max_bytes: int
) -> VerifiedAssertion:
    """Every check of RFC 7523 §3 but the jti's single use. No write transaction: the client, its keys and its
    flow come from the per-process client cache (read through `readers` at most every STATE_TTL_SECONDS, and
    at once after a change made through this process), so no lock is held while the signature is checked."""
    assertion = check_request(form, max_bytes)
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise invalid_grant("assertion is not a compact JWS (header.payload.signature)")
    header = _b64json(parts[0], "header")
    unverified = _b64json(parts[1], "payload")

    iss = _string(unverified, "iss", True)
    assert iss is not None
    # Client ids are short printable strings; anything else cannot name one (and must not reach SQL).
    known_shape = len(iss) <= 64 and "\x00" not in iss
    client = await state.clients.get(readers, iss) if known_shape else None
    if client is None:
        raise invalid_client(f"iss {iss[:100]!r} is not a known client: copy iss from the trigger page")
    if not client.enabled:
        raise invalid_client(f"client {iss} is disabled")

    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise invalid_grant("header kid must be a string")
    alg = _check_alg(header)
    key, payload = _verify_signature(assertion, alg, await _candidates(state, client, kid))
    _check_key_expiry(key, client, time.time())
    # From here on only the verified payload counts (the unverified parse only found the client).
    claims = _json_object(payload, "payload")

    sub = _string(claims, "sub", True)
    jti = _string(claims, "jti", False)
    flow_claim = _string(claims, "flow", False)
    _check_audience(claims, audience)
    exp = _check_times(claims, time.time())

    assert sub is not None
    if sub != str(client.flow_id):
        raise invalid_grant(f"sub {sub[:100]!r} is not a flow this client may trigger (copy sub from the trigger page)")
    if flow_claim is not None and flow_claim != sub:
        raise invalid_grant("claim flow must equal sub")
    if not client.triggerable:
        raise invalid_grant(f"flow {sub} is not active with a jwt trigger")
    return VerifiedAssertion(client.pk, client.client_id, client.flow_id, key.kid, jti, exp)


async def spend_jti(state: IncomingState, verified: VerifiedAssertion) -> None:
    """RFC 7523 §3 item 7: the jti is accepted once, until the assertion expires (incoming/single_use.py)."""
    if verified.jti is None:
        return
    if not await state.single_use.spend(spend_of(verified.client_pk, verified.jti, verified.exp, LEEWAY_SECONDS)):
        raise invalid_grant("jti has already been used: every assertion needs a new jti")


def issue(state: IncomingState, verified: VerifiedAssertion, env: str) -> IssuedAccessToken:
    token = state.tokens.mint(client_id=verified.client_id, flow_id=verified.flow_id, env=env, key_id=verified.key_id)
    return IssuedAccessToken(token, state.tokens.ttl, verified.client_id, verified.flow_id)
