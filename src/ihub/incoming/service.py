"""Trigger clients and their keys (the "trigger page"): create, list, rotate, revoke, disable.

Every function here is used by both the HTTP routes (with a caller's permissions checked first)
and the server-shell CLI.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import ApiError, bad_request, not_found
from ihub.config import Settings
from ihub.db.base import utcnow
from ihub.db.unit_of_work import after_commit
from ihub.egress import EgressPolicy
from ihub.events import outbox
from ihub.events.outbox import EventType
from ihub.incoming.access import IncomingState, incoming_state
from ihub.incoming.flowref import LoadedFlow, is_jwt_triggered, load_flow
from ihub.incoming.jwks import JwksCache, check_jwks_url
from ihub.incoming.keys import UnusableKey, algorithm_for, generate_rsa, public_jwk_from_pem, thumbprint
from ihub.incoming.models import TriggerClient, TriggerKey
from ihub.incoming.schemas import KeyOut, KeyUpdate, TriggerCreate, TriggerOut
from ihub.tenancy.permissions import Principal, require_admin

if TYPE_CHECKING:
    from ihub.common.context import AppContext


@dataclass
class AddedKey:
    client: TriggerClient
    kid: str | None
    private_pem: str | None


async def visible_flow(session: AsyncSession, principal: Principal | None, flow_id: int, *, manage: bool) -> LoadedFlow:
    """The flow if the caller's org subtree holds it (else 404); managing triggers needs Owner or Admin."""
    loaded = await load_flow(session, flow_id)
    if loaded is None or (principal is not None and not principal.sees(loaded.org_path)):
        raise not_found("flow", flow_id)
    if manage and principal is not None:
        require_admin(principal, "manage flow triggers")
    return loaded


def _plausible(text: str) -> bool:
    """Ids and kids are short printable strings; others cannot name a row (and a NUL breaks PostgreSQL)."""
    return len(text) <= 200 and "\x00" not in text


async def get_client(session: AsyncSession, flow_id: int, iss: str) -> TriggerClient:
    if not _plausible(iss):
        raise not_found("trigger client", iss[:100])
    client = await session.scalar(
        select(TriggerClient).where(TriggerClient.client_id == iss, TriggerClient.flow_id == flow_id)
    )
    if client is None:
        raise not_found("trigger client", iss)
    return client


async def get_client_by_iss(session: AsyncSession, iss: str) -> TriggerClient:
    if not _plausible(iss):
        raise not_found("trigger client", iss[:100])
    client = await session.scalar(select(TriggerClient).where(TriggerClient.client_id == iss))
    if client is None:
        raise not_found("trigger client", iss)
    return client


def _bad(error: Exception) -> ApiError:
    return ApiError(400, str(error), "invalid_key")


def key_expiry(
    expires_at: datetime | None,
    expires_in_days: int | None,
    max_age_days: int,
    *,
    now: datetime | None = None,
    default_to_max: bool = True,
) -> datetime | None:
    """The expiry a key gets: `expiresInDays` from now, or `expiresAt`, or (none asked, `default_to_max`) the
    hub's IHUB_TRIGGER_KEY_MAX_AGE_DAYS from now. With a hub-wide maximum no key may outlive it, so a later or
    absent expiry is refused rather than silently shortened: the caller learns the rule."""
    now = now or datetime.now(UTC)
    if expires_in_days is not None:
        wanted: datetime | None = now + timedelta(days=expires_in_days)
    elif expires_at is not None:
        wanted = expires_at if expires_at.tzinfo is not None else expires_at.replace(tzinfo=UTC)
        if wanted <= now:
            raise bad_request(f"expiresAt {wanted.isoformat()} is not in the future")
    elif max_age_days > 0 and default_to_max:
        return now + timedelta(days=max_age_days)
    else:
        wanted = None
    if max_age_days > 0:
        latest = now + timedelta(days=max_age_days)
        if wanted is None:
            raise bad_request(
                f"keys on this hub expire within {max_age_days} days (IHUB_TRIGGER_KEY_MAX_AGE_DAYS): "
                "give expiresAt or expiresInDays instead of clearing it"
            )
        if wanted > latest:
            raise bad_request(
                f"keys on this hub expire within {max_age_days} days (IHUB_TRIGGER_KEY_MAX_AGE_DAYS): "
                f"expiresAt may be at most {latest.isoformat(timespec='seconds')}"
            )
    return wanted


async def add_key(
    session: AsyncSession,
    loaded: LoadedFlow,
    data: TriggerCreate,
    policy: EgressPolicy,
    created_by: int | None = None,
    *,
    max_age_days: int = 0,
) -> AddedKey:
    """A new client for the flow, or (with `iss`) a new key for an existing one. A stored key gets the asked
    expiry, else `max_age_days` (IHUB_TRIGGER_KEY_MAX_AGE_DAYS) from now when set; JWKS keys are the client's."""
    if not is_jwt_triggered(loaded):
        raise ApiError(400, f"flow {loaded.flow.id} is not triggered by jwt (see its trigger in the template)")
    if data.iss is not None:
        client = await get_client(session, loaded.flow.id, data.iss)
    else:
        client = TriggerClient(client_id=str(uuid.uuid4()), flow_id=loaded.flow.id, enabled=True, created_by=created_by)
        session.add(client)
        await session.flush()

    private_pem: str | None = None
    kid: str | None = None
    expires_at = None if data.jwks_url is not None else key_expiry(data.expires_at, data.expires_in_days, max_age_days)
    try:
        if data.jwks_url is not None:
            client.jwks_url = check_jwks_url(data.jwks_url, policy)
        else:
            if data.generate_key:
                if data.alg not in (None, "RS256", "PS256"):
                    raise UnusableKey("a generated key is RSA: alg must be RS256 or PS256")
                generated = generate_rsa()
                jwk, source, private_pem = generated.public_jwk, "generated", generated.private_pem
            else:
                jwk, source = public_jwk_from_pem(data.public_key or ""), "uploaded"
            alg = algorithm_for(jwk, data.alg)
            kid = thumbprint(jwk)
            existing = await session.scalar(
                select(TriggerKey).where(TriggerKey.client_pk == client.id, TriggerKey.kid == kid)
            )
            if existing is not None:
                raise ApiError(409, f"key {kid} is already registered for this client", "conflict")
            session.add(
                TriggerKey(client_pk=client.id, kid=kid, alg=alg, jwk=jwk, source=source, expires_at=expires_at)
            )
    except UnusableKey as error:
        raise _bad(error) from None
    await session.flush()
    return AddedKey(client, kid, private_pem)


async def keys_of(session: AsyncSession, client_pks: Sequence[int]) -> dict[int, list[TriggerKey]]:
    rows = (
        await session.scalars(select(TriggerKey).where(TriggerKey.client_pk.in_(client_pks)).order_by(TriggerKey.id))
    ).all()
    grouped: dict[int, list[TriggerKey]] = {pk: [] for pk in client_pks}
    for row in rows:
        grouped[row.client_pk].append(row)
    return grouped


async def list_clients(session: AsyncSession, flow_id: int) -> list[TriggerClient]:
    return list(
        await session.scalars(select(TriggerClient).where(TriggerClient.flow_id == flow_id).order_by(TriggerClient.id))
    )


async def set_enabled(session: AsyncSession, client: TriggerClient, enabled: bool) -> None:
    """Enable or disable a client; disabling an enabled one emits `trigger.disabled` (API, console and CLI alike)."""
    was_enabled = client.enabled
    client.enabled = enabled
    await session.flush()
    if was_enabled and not enabled:
        await _emit_disabled(session, client)


async def _emit_disabled(session: AsyncSession, client: TriggerClient) -> None:
    loaded = await load_flow(session, client.flow_id)
    if loaded is None:
        return
    data = {
        "clientId": client.client_id,
        "flowId": str(loaded.flow.id),
        "flowKey": loaded.flow.key,
        "projectId": str(loaded.project_id),
        "orgId": str(loaded.org_id),
    }
    await outbox.emit(session, EventType.TRIGGER_DISABLED, loaded.org_path, data)


async def set_jwks_url(session: AsyncSession, client: TriggerClient, url: str, policy: EgressPolicy) -> None:
    try:
        client.jwks_url = check_jwks_url(url, policy)
    except UnusableKey as error:
        raise _bad(error) from None
    await session.flush()


async def revoke_key(session: AsyncSession, client: TriggerClient, kid: str, jwks: JwksCache | None = None) -> None:
    """Mark a key revoked. For a JWKS client an unknown kid is recorded too, so the published key is refused."""
    if not _plausible(kid):
        raise not_found("key", kid[:100])
    row = await session.scalar(select(TriggerKey).where(TriggerKey.client_pk == client.id, TriggerKey.kid == kid))
    if row is None:
        if not client.jwks_url:
            raise not_found("key", kid)
        alg = "RS256"
        if jwks is not None:
            published = jwks.cached(client.jwks_url).get(kid)
            alg = published[1] if published else alg
        row = TriggerKey(client_pk=client.id, kid=kid[:200], alg=alg, jwk=None, source="jwks")
        session.add(row)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    await session.flush()


async def set_key_expiry(
    session: AsyncSession, client: TriggerClient, kid: str, change: KeyUpdate, max_age_days: int
) -> TriggerKey:
    """Set or clear a stored key's expiry. A changed expiry clears the notice marker, so `trigger.key_expiring`
    is sent again for the new date (incoming/expiry.py)."""
    if not _plausible(kid):
        raise not_found("key", kid[:100])
    row = await session.scalar(select(TriggerKey).where(TriggerKey.client_pk == client.id, TriggerKey.kid == kid))
    if row is None or row.jwk is None:
        raise not_found("key", kid)
    if row.revoked_at is not None:
        raise bad_request(f"key {kid} is revoked: a revoked key cannot be given an expiry")
    expires_at = key_expiry(change.expires_at, change.expires_in_days, max_age_days, default_to_max=False)
    if expires_at != row.expires_at:
        row.expires_at = expires_at
        row.expiry_notified_at = None
    await session.flush()
    return row


async def delete_client(session: AsyncSession, client: TriggerClient) -> None:
    await session.delete(client)
    await session.flush()


def urls(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    base = settings.public_url
    tokens = {env: f"{base}/{env}/incoming/token" for env in settings.incoming_envs}
    hooks = {env: f"{base}/{env}/incoming/webhook/jwt" for env in settings.incoming_envs}
    return tokens, hooks


def describe(
    client: TriggerClient,
    keys: list[TriggerKey],
    settings: Settings,
    jwks: JwksCache | None = None,
    added: AddedKey | None = None,
) -> TriggerOut:
    tokens, hooks = urls(settings)
    default = settings.incoming_envs[0]
    now = utcnow()
    out = [
        KeyOut(
            kid=k.kid,
            alg=k.alg,
            source=k.source,
            created_at=k.created_at,
            revoked=k.revoked_at is not None,
            revoked_at=k.revoked_at,
            expires_at=k.expires_at,
            expired=k.expires_at is not None and k.expires_at <= now,
        )
        for k in keys
    ]
    if client.jwks_url and jwks is not None:
        known = {k.kid for k in keys}
        for kid, (_, alg) in jwks.cached(client.jwks_url).items():
            if kid not in known:
                out.append(KeyOut(kid=kid, alg=alg, source="jwks", revoked=False))
    return TriggerOut(
        iss=client.client_id,
        sub=str(client.flow_id),
        aud=tokens[default],
        token_urls=tokens,
        webhook_url=hooks[default],
        webhook_urls=hooks,
        flow_id=client.flow_id,
        enabled=client.enabled,
        jwks_url=client.jwks_url,
        keys=out,
        created_at=client.created_at,
        kid=added.kid if added else None,
        private_key=added.private_pem if added else None,
    )


async def describe_all(
    session: AsyncSession, flow_id: int, settings: Settings, jwks: JwksCache | None = None
) -> list[TriggerOut]:
    clients = await list_clients(session, flow_id)
    keys = await keys_of(session, [c.id for c in clients])
    return [describe(c, keys[c.id], settings, jwks) for c in clients]


# -- the trigger page's actions, as both /api/v1 and the console perform them -------------------------------


def _state(context: AppContext) -> IncomingState:
    return incoming_state(context)


def invalidate_after_commit(session: AsyncSession, context: AppContext, client_id: str) -> None:
    """Drop the webhook's cached view of a client once the change is committed: dropped earlier, a webhook in
    between could cache the old row again (for the cache's 5 s) from a snapshot before the commit."""
    after_commit(session, partial(_state(context).clients.invalidate, client_id))


async def _described(session: AsyncSession, context: AppContext, client: TriggerClient) -> TriggerOut:
    keys = await keys_of(session, [client.id])
    return describe(client, keys[client.id], context.settings, _state(context).jwks)


async def show_triggers(
    session: AsyncSession, context: AppContext, principal: Principal, flow_id: int
) -> list[TriggerOut]:
    """What a client needs to call the flow (any viewer who sees the flow)."""
    loaded = await visible_flow(session, principal, flow_id, manage=False)
    return await describe_all(session, loaded.flow.id, context.settings, _state(context).jwks)


async def create_trigger(
    session: AsyncSession, context: AppContext, principal: Principal, flow_id: int, data: TriggerCreate
) -> TriggerOut:
    """A new client (or, with `data.iss`, a new key of one: a rotation); a generated private key is in the
    answer once and never stored."""
    loaded = await visible_flow(session, principal, flow_id, manage=True)
    state = _state(context)
    added = await add_key(
        session,
        loaded,
        data,
        state.jwks.policy,
        created_by=principal.user_id,
        max_age_days=context.settings.trigger_key_max_age_days,
    )
    invalidate_after_commit(session, context, added.client.client_id)
    keys = await keys_of(session, [added.client.id])
    return describe(added.client, keys[added.client.id], context.settings, state.jwks, added)


async def update_trigger(
    session: AsyncSession,
    context: AppContext,
    principal: Principal,
    flow_id: int,
    iss: str,
    *,
    enabled: bool | None = None,
    jwks_url: str | None = None,
) -> TriggerOut:
    """Enable or disable a client (tokens stop within 5 seconds), or change its JWKS URL."""
    loaded = await visible_flow(session, principal, flow_id, manage=True)
    client = await get_client(session, loaded.flow.id, iss)
    if jwks_url is not None:
        await set_jwks_url(session, client, jwks_url, _state(context).jwks.policy)
    if enabled is not None:
        await set_enabled(session, client, enabled)
    invalidate_after_commit(session, context, client.client_id)
    return await _described(session, context, client)


async def revoke_trigger_key(
    session: AsyncSession, context: AppContext, principal: Principal, flow_id: int, iss: str, kid: str
) -> TriggerOut:
    loaded = await visible_flow(session, principal, flow_id, manage=True)
    client = await get_client(session, loaded.flow.id, iss)
    await revoke_key(session, client, kid, _state(context).jwks)
    invalidate_after_commit(session, context, client.client_id)
    return await _described(session, context, client)


async def update_trigger_key(
    session: AsyncSession,
    context: AppContext,
    principal: Principal,
    flow_id: int,
    iss: str,
    kid: str,
    change: KeyUpdate,
) -> TriggerOut:
    """Set or clear one key's expiry (Owner or Admin); the token endpoint applies it within 5 seconds."""
    loaded = await visible_flow(session, principal, flow_id, manage=True)
    client = await get_client(session, loaded.flow.id, iss)
    await set_key_expiry(session, client, kid, change, context.settings.trigger_key_max_age_days)
    invalidate_after_commit(session, context, client.client_id)
    return await _described(session, context, client)


async def delete_trigger(
    session: AsyncSession, context: AppContext, principal: Principal, flow_id: int, iss: str
) -> TriggerOut:
    loaded = await visible_flow(session, principal, flow_id, manage=True)
    client = await get_client(session, loaded.flow.id, iss)
    keys = await keys_of(session, [client.id])
    described = describe(client, keys[client.id], context.settings)
    await delete_client(session, client)
    invalidate_after_commit(session, context, iss)
    return described
