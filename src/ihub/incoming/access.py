"""ihub's own access tokens for the webhook, and the short-lived cache of each client's state.

Tokens are HS256 JWTs under a key derived from IHUB_SECRET_KEY (so every API node can verify them
without the database), with a `kid` naming the key so a new master key can be rolled in. The only
database read on the webhook path is the client's state, cached for at most `STATE_TTL_SECONDS`, which
bounds how long a disabled trigger or revoked key keeps working.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ihub.common.crypto import derive_key, sha256_hex
from ihub.egress import policy_from_settings
from ihub.incoming.flowref import is_jwt_triggered, is_sync, load_flow, sync_timeout
from ihub.incoming.jwks import JwksCache
from ihub.incoming.models import TriggerClient, TriggerKey
from ihub.incoming.single_use import SingleUse
from ihub.ratelimit.service import CleanAddresses

if TYPE_CHECKING:
    from ihub.common.context import AppContext

TOKEN_PURPOSE = "ihub/incoming/access-token/v1"
TOKEN_ISSUER = "ihub/incoming"
TOKEN_ALG = "HS256"
STATE_TTL_SECONDS = 5.0


class InvalidToken(Exception):
    """The bearer token is not one ihub issued, has expired, or belongs elsewhere; the message says which."""


@dataclass(frozen=True)
class AccessClaims:
    client_id: str
    flow_id: int
    env: str
    key_id: str
    exp: int


class AccessTokens:
    def __init__(self, master_key: str, ttl_seconds: int, previous_master_keys: tuple[str, ...] = ()) -> None:
        self.ttl = ttl_seconds
        self._keys: dict[str, OctKey] = {}
        for index, master in enumerate((master_key, *previous_master_keys)):
            raw = derive_key(master, TOKEN_PURPOSE)
            kid = sha256_hex(raw)[:16]
            self._keys[kid] = OctKey.import_key(raw)
            if index == 0:
                self.kid = kid

    def mint(self, *, client_id: str, flow_id: int, env: str, key_id: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "client": client_id,
            "flow": str(flow_id),
            "env": env,
            "akid": key_id,
            "iat": issued,
            "exp": issued + self.ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({"alg": TOKEN_ALG, "typ": "JWT", "kid": self.kid}, claims, self._keys[self.kid])

    def verify(self, token: str, now: float | None = None) -> AccessClaims:
        header = _header(token)
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise InvalidToken("token was not issued by this hub (unknown key)")
        try:
            claims: dict[str, Any] = jwt.decode(token, key, algorithms=[TOKEN_ALG]).claims
        except (JoseError, ValueError) as error:
            raise InvalidToken(f"token signature or format is invalid ({error.__class__.__name__})") from None
        exp = claims.get("exp")
        if claims.get("iss") != TOKEN_ISSUER or not isinstance(exp, int):
            raise InvalidToken("token was not issued by the incoming token endpoint")
        if exp <= (now if now is not None else time.time()):
            raise InvalidToken("token has expired: get a new one from /incoming/token")
        try:
            return AccessClaims(
                client_id=str(claims["client"]),
                flow_id=int(claims["flow"]),
                env=str(claims["env"]),
                key_id=str(claims.get("akid", "")),
                exp=exp,
            )
        except (KeyError, ValueError, TypeError):
            raise InvalidToken("token lacks its client, flow or env") from None


def _header(token: str) -> dict[str, Any]:
    head = token.split(".", 1)[0]
    try:
        value = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken("token is not a JWT") from None
    if not isinstance(value, dict):
        raise InvalidToken("token is not a JWT")
    return value


@dataclass(frozen=True)
class ClientKey:
    kid: str
    alg: str
    jwk: dict[str, Any] | None
    revoked: bool
    # Seconds since the epoch after which the key obtains no token (None: no expiry), cached with the key so the
    # token endpoint's expiry check costs no query.
    expires_at: float | None = None


def key_expired(expires_at: float | None, now: float) -> bool:
    """A key with an expiry at or before `now` is expired (no leeway: the date was chosen by a person)."""
    return expires_at is not None and expires_at <= now


@dataclass(frozen=True)
class ClientState:
    """What the webhook needs about a client, as of `loaded_at` (monotonic)."""

    pk: int
    client_id: str
    enabled: bool
    flow_id: int
    project_id: int
    flow_version: int
    triggerable: bool
    sync: bool
    timeout: float
    revoked_kids: frozenset[str]
    loaded_at: float
    # For the token endpoint: where the client publishes keys, and its stored keys (revoked ones included).
    jwks_url: str | None = None
    keys: tuple[ClientKey, ...] = ()

    def key_expiry(self, kid: str) -> float | None:
        """The expiry of the stored key `kid` (the webhook checks the key that obtained a token)."""
        return next((key.expires_at for key in self.keys if key.kid == kid), None)


async def read_client_state(session: AsyncSession, client_id: str) -> ClientState | None:
    client = await session.scalar(select(TriggerClient).where(TriggerClient.client_id == client_id))
    if client is None:
        return None
    loaded = await load_flow(session, client.flow_id)
    rows = await session.scalars(select(TriggerKey).where(TriggerKey.client_pk == client.id).order_by(TriggerKey.id))
    keys = tuple(
        ClientKey(
            row.kid,
            row.alg,
            row.jwk,
            row.revoked_at is not None,
            row.expires_at.timestamp() if row.expires_at is not None else None,
        )
        for row in rows
    )
    return ClientState(
        pk=client.id,
        client_id=client.client_id,
        enabled=client.enabled,
        flow_id=client.flow_id,
        project_id=loaded.project_id if loaded else 0,
        flow_version=int(getattr(loaded, "template_version", 1) or 1) if loaded else 1,
        triggerable=bool(loaded and is_jwt_triggered(loaded)),
        sync=bool(loaded and is_sync(loaded)),
        timeout=sync_timeout(loaded) if loaded else 0.0,
        revoked_kids=frozenset(key.kid for key in keys if key.revoked),
        loaded_at=time.monotonic(),
        jwks_url=client.jwks_url,
        keys=keys,
    )


class ClientStateCache:
    """Each client's state, read at most once per `ttl` per process. Concurrent misses share one read, and
    a read that was under way when the client changed here is not cached (invalidate bumps a generation)."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float = STATE_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._states: dict[str, tuple[float, ClientState | None]] = {}
        self._inflight: dict[str, asyncio.Task[ClientState | None]] = {}
        self._generation = 0

    async def get(self, sessions: async_sessionmaker[AsyncSession], client_id: str) -> ClientState | None:
        cached = self._states.get(client_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        task = self._inflight.get(client_id)
        if task is None:
            task = asyncio.create_task(self._load(sessions, client_id))
            self._inflight[client_id] = task
        return await asyncio.shield(task)

    async def _load(self, sessions: async_sessionmaker[AsyncSession], client_id: str) -> ClientState | None:
        generation, started = self._generation, time.monotonic()
        try:
            async with sessions() as session:
                state = await read_client_state(session, client_id)
        finally:
            if self._inflight.get(client_id) is asyncio.current_task():
                del self._inflight[client_id]
        if generation == self._generation:
            if len(self._states) >= self.MAX_ENTRIES:
                self._states.clear()
            self._states[client_id] = (started, state)
        return state

    def invalidate(self, client_id: str | None = None) -> None:
        self._generation += 1
        if client_id is None:
            self._states.clear()
            self._inflight.clear()
        else:
            self._states.pop(client_id, None)
            self._inflight.pop(client_id, None)


@dataclass
class IncomingState:
    tokens: AccessTokens
    clients: ClientStateCache
    jwks: JwksCache
    single_use: SingleUse
    clean_addresses: CleanAddresses


def incoming_state(context: AppContext) -> IncomingState:
    """This process's token keys and caches, made on first use and kept in the app context."""
    state = context.incoming
    if state is None:
        state = context.incoming = IncomingState(
            tokens=AccessTokens(context.master_key, context.settings.incoming_token_ttl_seconds),
            clients=ClientStateCache(),
            jwks=JwksCache(policy_from_settings(context.settings)),
            single_use=SingleUse(context.sessions),
            clean_addresses=CleanAddresses(),
        )
    return state
