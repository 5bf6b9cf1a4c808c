"""Refreshing the access tokens of connections a person authorized, one refresh per connection at a time.

A rotating refresh token (RFC 6749 §6, RFC 9700 §4.14.2) may be spent once: two workers that both refresh with
it would leave one of them, and maybe the grant, revoked. So a refresh happens inside a short transaction that
holds the connection's row (PostgreSQL `SELECT ... FOR UPDATE`; SQLite's write transaction, which ihub begins
IMMEDIATE, already admits one writer), re-reads the stored tokens there (another worker may just have refreshed:
then its tokens are used), refreshes, stores the new tokens and commits. Within a process a lock per connection
keeps contenders off the database until the first one is done. The lock is held while the token endpoint
answers; that call is bounded by `REFRESH_LIMITS`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx

from ihub.common.errors import ApiError
from ihub.egress import FetchLimits
from ihub.flows.connections import ConnectionError_
from ihub.oauth.models import OAuthApp
from ihub.oauth.service import app_for_project, resolve
from ihub.oauth.tokens import GRANT_GONE, TokenRefused, TokenUnavailable, refresh
from ihub.observability import metrics
from ihub.projects import health
from ihub.projects import service as projects
from ihub.projects.models import Project
from ihub.templates import connection_types
from ihub.templates.oauth_providers import PROVIDERS

if TYPE_CHECKING:
    from ihub.common.context import AppContext

# Refresh when less than this is left: a token must not expire between the check and the target's check.
REFRESH_AHEAD_SECONDS = 60.0
REFRESH_LIMITS = FetchLimits(deadline=15.0, max_bytes=64 * 1024)
GRANT = "authorization_code"  # the grant label of ihub_connection_refreshes_total


def expiring(expires_at: Any, now: float | None = None) -> bool:
    if not isinstance(expires_at, int | float):
        return False  # the provider gave no lifetime: used until the target answers 401
    return expires_at - (time.time() if now is None else now) < REFRESH_AHEAD_SECONDS


class AuthorizationCodeTokens:
    """ihub.flows.connections.UserTokens for the engine: tokens read from and refreshed into the database."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        # One lock per connection this process has refreshed: as many as the connections it uses, each a few
        # hundred bytes; the database lock is what guarantees one refresh, these only spare it local contenders.
        self._locks: dict[tuple[str, int, str], asyncio.Lock] = {}

    async def access_token(
        self, http: httpx.AsyncClient, runtime: dict[str, Any], limits: FetchLimits, *, force: bool = False
    ) -> str:
        config, secrets = runtime.setdefault("config", {}), runtime.setdefault("secrets", {})
        current = secrets.get("token")
        if isinstance(current, str) and current and not force and not expiring(config.get("expiresAt")):
            return current
        ref = runtime.get("ref") or {}
        project_id, slot = ref.get("projectId"), ref.get("slot")
        if not isinstance(project_id, int) or not isinstance(slot, str):
            raise ConnectionError_("the connection's tokens cannot be refreshed here (no connection reference)")
        key = (str(self.context.settings.database_url), project_id, slot)
        async with self._locks.setdefault(key, asyncio.Lock()):
            try:
                stored = await self._refresh_locked(
                    http, project_id, slot, current if isinstance(current, str) else None, force
                )
            except ConnectionError_ as error:
                metrics.refresh_failed(GRANT, error.kind)
                raise
        secrets["token"], secrets["refreshToken"] = stored.get("accessToken"), stored.get("refreshToken")
        config["expiresAt"] = stored.get("expiresAt")
        token = stored.get("accessToken")
        if not isinstance(token, str) or not token:
            raise ConnectionError_("the connection has no access token: connect it again", "needs_reconnect")
        return token

    async def _refresh_locked(
        self, http: httpx.AsyncClient, project_id: int, slot_id: str, ours: str | None, force: bool
    ) -> dict[str, Any]:
        box = self.context.box
        async with self.context.sessions() as session:
            connection = await projects.connection_row(session, project_id, slot_id, lock=True)
            project = await session.get(Project, project_id)
            slot = await projects.pinned_slot(session, project, slot_id) if project is not None else None
            if connection is None or project is None or slot is None:
                raise ConnectionError_(f"project {project_id} has no connection {slot_id!r}")
            stored = projects.obtained_secrets(box, connection)
            fresh = not expiring(stored.get("expiresAt"))
            if stored.get("accessToken") and fresh and (stored.get("accessToken") != ours or not force):
                # Another worker refreshed meanwhile (or the stored token is still good): use its tokens.
                await session.rollback()
                metrics.connection_refresh(GRANT, "reused")
                return stored
            refresh_token = stored.get("refreshToken")
            if not isinstance(refresh_token, str) or not refresh_token:
                raise ConnectionError_(
                    f"connection {slot_id!r}: the access token expired and the provider gave no refresh token; "
                    "connect it again",
                    "needs_reconnect",
                )
            provider = PROVIDERS[connection_types.get_type(connection.type).oauth_provider or "generic"]
            # The app the tokens were obtained with (a refresh token is bound to its client); the one in effect
            # now only when that app is gone.
            app_id = stored.get("appId")
            app = await session.get(OAuthApp, app_id) if isinstance(app_id, int) else None
            if app is None:
                try:
                    app = await app_for_project(session, project, provider)
                except ApiError as error:
                    raise ConnectionError_(f"connection {slot_id!r}: {error.message}", "auth") from None
            client = resolve(box, app, provider).client
            try:
                tokens = await refresh(http, client, refresh_token, REFRESH_LIMITS)
            except TokenRefused as refused:
                detail = f"{refused.error}: {refused.description}" if refused.description else refused.error
                if refused.error in GRANT_GONE:
                    # RFC 6749 §5.2 invalid_grant: the refresh token is invalid, expired or revoked.
                    raise ConnectionError_(
                        f"connection {slot_id!r} needs to be connected again: the provider refused the refresh "
                        f"({detail})",
                        "needs_reconnect",
                    ) from None
                raise ConnectionError_(
                    f"connection {slot_id!r}: the provider refused the refresh ({detail})", "auth"
                ) from None
            except TokenUnavailable as error:
                # Nothing was spent (or the provider did not answer): an ordinary failure, retried like any other.
                raise ConnectionError_(
                    f"connection {slot_id!r}: refreshing the token failed: {error}", "connect"
                ) from None
            values = {**tokens.secrets(), "appId": app.id}
            projects.store_obtained(box, connection, values, slot)
            await health.record_refreshed(session, connection.id)
            await session.commit()
            metrics.connection_refresh(GRANT, "refreshed")
            return values
