"""API secret keys and the `/api/v1/token` exchange: sha256(secret + nonce), one-time nonces,
rate-limited failures, and opaque tokens stored only as digests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.crypto import SecretBox, constant_time_equals, sha256_hex
from ihub.common.errors import ApiError
from ihub.config import Settings
from ihub.db.base import utcnow
from ihub.provisioning.models import ApiKey, ApiToken, UsedNonce
from ihub.ratelimit import service as ratelimit
from ihub.tenancy.models import Organization, User
from ihub.tenancy.permissions import Principal, Role, require_owner
from ihub.tenancy.service import visible_user

# Opened and compared against when the user is unknown, so both failures cost the same work.
_DECOY_SECRET = secrets.token_urlsafe(32)
_DECOY_CONTEXT = "api-key:decoy"
_decoys: WeakKeyDictionary[SecretBox, str] = WeakKeyDictionary()


def _decoy_sealed(box: SecretBox) -> str:
    sealed = _decoys.get(box)
    if sealed is None:
        sealed = _decoys[box] = box.seal(_DECOY_SECRET, _DECOY_CONTEXT)
    return sealed


def key_context(user_id: int) -> str:
    return f"api-key:user:{user_id}"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires: datetime
    expires_in: int
    user_id: int


@dataclass(frozen=True)
class IssuedKey:
    user_id: int
    secret: str
    created_at: datetime


async def generate_key(session: AsyncSession, box: SecretBox, user_id: int) -> IssuedKey:
    """A new secret for the user, replacing any old one (and with it every token and nonce it had)."""
    await session.execute(delete(ApiKey).where(ApiKey.user_id == user_id))
    secret = secrets.token_urlsafe(32)
    key = ApiKey(user_id=user_id, secret_sealed=box.seal(secret, key_context(user_id)))
    session.add(key)
    await session.flush()
    return IssuedKey(user_id=user_id, secret=secret, created_at=key.created_at)


async def generate_key_for(session: AsyncSession, box: SecretBox, principal: Principal, user_id: int) -> IssuedKey:
    user = await visible_user(session, principal, user_id)
    require_owner(principal, "generate API keys")
    return await generate_key(session, box, user.id)


def _failure_limits(settings: Settings, user_id: int, client: str) -> ratelimit.FailureLimits:
    return ratelimit.failure_limits(
        "token-fail",
        str(user_id),
        client,
        per_pair=settings.token_failures_per_user_and_client,
        per_address=settings.token_failures_per_client,
        per_subject=settings.token_failures_per_user,
        window=settings.token_failure_window_seconds,
    )


INVALID_CREDENTIALS = "invalid credentials: check userId, the secret key and how the hash is computed"


async def exchange(
    session: AsyncSession,
    box: SecretBox,
    settings: Settings,
    *,
    user_id: int,
    nonce: str,
    hash_hex: str,
    client: str,
) -> IssuedToken:
    limits = _failure_limits(settings, user_id, client)
    wait = await limits.retry_after(session)
    if wait is not None:
        raise ApiError(
            429, f"too many failed attempts; retry in {wait} s", "rate_limited", headers={"Retry-After": str(wait)}
        )

    key = await session.scalar(select(ApiKey).where(ApiKey.user_id == user_id))
    if key is not None:
        secret = box.open(key.secret_sealed, key_context(user_id))
    else:
        secret = box.open(_decoy_sealed(box), _DECOY_CONTEXT)
    matches = constant_time_equals(sha256_hex(secret + nonce), hash_hex.lower())

    async def fail(message: str, code: str) -> ApiError:
        # The one commit in this service, an exception to the unit of work (docs/architecture.md): the failed
        # attempt must be counted although the request fails, and the error rolls back the rest.
        await limits.record(session)
        await session.commit()
        return ApiError(401, message, code)

    if key is None or not matches:
        raise await fail(INVALID_CREDENTIALS, "invalid_credentials")

    try:
        async with session.begin_nested():
            session.add(UsedNonce(key_id=key.id, digest=sha256_hex(nonce)))
    except IntegrityError:
        raise await fail("nonce already used: choose a new nonce for every /token call", "nonce_reused") from None

    now = utcnow()
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=settings.api_token_ttl_seconds)
    session.add(ApiToken(digest=sha256_hex(token), user_id=user_id, key_id=key.id, expires_at=expires))
    # Expired tokens are useless; drop this user's as new ones are made.
    await session.execute(delete(ApiToken).where(ApiToken.user_id == user_id, ApiToken.expires_at < now))
    await session.flush()
    return IssuedToken(token=token, expires=expires, expires_in=settings.api_token_ttl_seconds, user_id=user_id)


async def authenticate(session: AsyncSession, token: str) -> Principal | None:
    """The caller behind a token, or None. Deleting the user or replacing the key deletes its tokens."""
    row = (
        await session.execute(
            select(User.id, User.org_id, User.role, Organization.path)
            .join(ApiToken, ApiToken.user_id == User.id)
            .join(Organization, Organization.id == User.org_id)
            .where(ApiToken.digest == sha256_hex(token), ApiToken.expires_at > utcnow())
        )
    ).first()
    if row is None:
        return None
    return Principal(user_id=row.id, org_id=row.org_id, org_path=row.path, role=Role(row.role))


async def has_key(session: AsyncSession, user_ids: list[int]) -> set[int]:
    if not user_ids:
        return set()
    return set((await session.scalars(select(ApiKey.user_id).where(ApiKey.user_id.in_(user_ids)))).all())
