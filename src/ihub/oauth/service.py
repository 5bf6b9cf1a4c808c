"""OAuth apps per organization, and the authorization-code flow with PKCE that fills a project's connection.

Authorize: a random `state` (only its SHA-256 is stored) bound to the project, slot and user, single use and
short-lived, with a PKCE S256 verifier sealed beside it. Callback: the state is spent first, in a transaction of
its own, so a replayed callback finds it used and does nothing; the code is then exchanged outside any
transaction (no database lock is held while the provider answers), and the tokens are stored in a third.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ihub.audit.recorder import Actor, Channel
from ihub.audit.recorder import begin as begin_audit
from ihub.common.context import AppContext
from ihub.common.crypto import SecretBox, sha256_hex
from ihub.common.errors import bad_request, not_found
from ihub.db.base import utcnow
from ihub.db.unit_of_work import unit_of_work
from ihub.egress import FetchLimits
from ihub.flows.connections import origin, same_origin
from ihub.oauth import pkce
from ihub.oauth.models import OAuthApp, OAuthState
from ihub.oauth.schemas import OAuthAppIn, OAuthAppOut
from ihub.oauth.tokens import Client, TokenRefused, TokenUnavailable, exchange_code
from ihub.projects import health
from ihub.projects import service as projects
from ihub.projects.models import Project
from ihub.projects.status import ConnectionStatus
from ihub.templates import connection_types
from ihub.templates.oauth_providers import PROVIDERS, OAuthProvider
from ihub.tenancy.models import Organization, User
from ihub.tenancy.permissions import Principal, Role, require_admin
from ihub.tenancy.service import ancestor_ids, visible_org

CALLBACK_PATH = "/oauth/callback"
# The code exchange gets this long and this much answer (a token response is small).
EXCHANGE_LIMITS = FetchLimits(deadline=20.0, max_bytes=64 * 1024)


def app_context(app: OAuthApp) -> str:
    return f"oauth-app:{app.id}"


def state_context(digest: str) -> str:
    return f"oauth-state:{digest}"


def provider_named(name: str) -> OAuthProvider:
    provider = PROVIDERS.get(name)
    if provider is None:
        raise bad_request(f"provider: unknown, one of {', '.join(PROVIDERS)}", "unknown_provider")
    return provider


# -- OAuth apps ----------------------------------------------------------------------------------


def _app_out(app: OAuthApp, org_id: int) -> OAuthAppOut:
    return OAuthAppOut(
        org_id=app.org_id,
        provider=app.provider,
        client_id=app.client_id,
        authorize_url=app.authorize_url,
        token_url=app.token_url,
        scope=app.scope,
        inherited=app.org_id != org_id,
        updated_at=app.updated_at,
    )


async def put_app(
    session: AsyncSession, box: SecretBox, principal: Principal, org_id: int, provider_name: str, data: OAuthAppIn
) -> OAuthAppOut:
    """Create or replace the org's app for a provider (Owners and Admins of the org or above)."""
    org = await visible_org(session, principal, org_id)
    require_admin(principal, "set an organization's OAuth apps")
    provider = provider_named(provider_name)
    if provider.authorize_url is None and not (data.authorize_url and data.token_url):
        raise bad_request(f"the {provider.name} provider needs authorizeUrl and tokenUrl", "invalid_oauth_app")
    app = await session.scalar(select(OAuthApp).where(OAuthApp.org_id == org.id, OAuthApp.provider == provider.name))
    if app is None:
        app = OAuthApp(org_id=org.id, provider=provider.name, client_id=data.client_id, client_secret_sealed="")
        session.add(app)
        await session.flush()  # the id is part of the sealing context
    app.client_id = data.client_id
    app.client_secret_sealed = box.seal(data.client_secret, app_context(app))
    app.authorize_url, app.token_url, app.scope = data.authorize_url, data.token_url, data.scope
    app.updated_at = utcnow()
    await session.flush()
    return _app_out(app, org.id)


async def delete_app(session: AsyncSession, principal: Principal, org_id: int, provider_name: str) -> OAuthAppOut:
    org = await visible_org(session, principal, org_id)
    require_admin(principal, "delete an organization's OAuth apps")
    app = await session.scalar(select(OAuthApp).where(OAuthApp.org_id == org.id, OAuthApp.provider == provider_name))
    if app is None:
        raise not_found("OAuth app", f"{provider_name} of organization {org.id}")
    out = _app_out(app, org.id)
    await session.delete(app)
    await session.flush()
    return out


async def effective_apps(session: AsyncSession, org_id: int) -> dict[str, OAuthApp]:
    """provider → the app that applies in the org: its own, else its nearest ancestor's."""
    chain = await ancestor_ids(session, org_id)
    rows = (await session.scalars(select(OAuthApp).where(OAuthApp.org_id.in_(chain)))).all()
    distance = {org: index for index, org in enumerate(chain)}
    found: dict[str, OAuthApp] = {}
    for app in sorted(rows, key=lambda a: distance[a.org_id]):
        found.setdefault(app.provider, app)
    return found


async def list_apps(session: AsyncSession, principal: Principal, org_id: int) -> Sequence[OAuthAppOut]:
    """The apps in effect in an org (anyone who sees the org; never the secret)."""
    org = await visible_org(session, principal, org_id)
    apps = await effective_apps(session, org.id)
    return [_app_out(apps[name], org.id) for name in sorted(apps)]


@dataclass(frozen=True)
class ResolvedApp:
    app: OAuthApp
    provider: OAuthProvider
    authorize_url: str
    client: Client
    scope: str


def resolve(box: SecretBox, app: OAuthApp, provider: OAuthProvider, scope: str | None = None) -> ResolvedApp:
    authorize_url = app.authorize_url or provider.authorize_url
    token_url = app.token_url or provider.token_url
    if not authorize_url or not token_url:  # refused when the app is set; a row edited around the service
        raise bad_request(f"the {provider.name} OAuth app has no authorize or token URL", "invalid_oauth_app")
    secret = box.open(app.client_secret_sealed, app_context(app))
    scopes = scope or app.scope or provider.scope_separator.join(provider.scopes)
    client = Client(app.client_id, secret, token_url, provider.client_auth)
    return ResolvedApp(app, provider, authorize_url, client, scopes)


async def app_for_project(session: AsyncSession, project: Project, provider: OAuthProvider) -> OAuthApp:
    app = (await effective_apps(session, project.org_id)).get(provider.name)
    if app is None:
        raise bad_request(
            f"no OAuth app for provider {provider.name!r} in organization {project.org_id} or its ancestors: "
            f"an Owner or Admin sets one with PUT /api/v1/oauth/app/org/{{orgId}}/{provider.name}",
            "oauth_app_missing",
        )
    return app


async def authorize_origins(session: AsyncSession, org_id: int, type_names: set[str]) -> list[str]:
    """The origins of the authorize URLs the org's OAuth apps send people to, for these connection types."""
    wanted = {connection_types.TYPES[name].oauth_provider for name in type_names if name in connection_types.TYPES}
    wanted.discard(None)
    if not wanted:
        return []
    origins: set[str] = set()
    for name, app in (await effective_apps(session, org_id)).items():
        if name not in wanted:
            continue
        url = app.authorize_url or PROVIDERS[name].authorize_url
        parsed = origin(url) if url else None
        if parsed is not None:
            scheme, host, port = parsed
            origins.add(f"{scheme}://{host}:{port}")
    return sorted(origins)


# -- authorize -----------------------------------------------------------------------------------


def check_return_url(return_url: str | None, public_url: str) -> str | None:
    """Only back to this hub (same origin as IHUB_PUBLIC_URL): the callback page must not send a person on to
    a site that an attacker chose."""
    if return_url is None or return_url == "":
        return None
    if not same_origin(return_url, public_url):
        raise bad_request("returnUrl: must be on this hub (same origin as IHUB_PUBLIC_URL)", "invalid_return_url")
    return return_url


async def authorize(
    session: AsyncSession,
    box: SecretBox,
    principal: Principal,
    project_id: int,
    slot_id: str,
    *,
    public_url: str,
    ttl: timedelta,
    return_url: str | None = None,
) -> str:
    """The provider's authorization URL for one Connect of the project's slot (whoever may edit the project)."""
    project = await projects.visible_project(session, principal, project_id)
    slot = await projects.pinned_slot(session, project, slot_id)
    if slot is None:
        raise not_found("connection", f"{slot_id!r} of project {project.id}")
    kind = connection_types.get_type(slot["type"])
    if kind.oauth_provider is None:
        raise bad_request(
            f"connection {slot_id!r} is of type {kind.name!r}, which is not connected by a person (no OAuth2)",
            "not_an_oauth_connection",
        )
    returned = check_return_url(return_url, public_url)
    provider = PROVIDERS[kind.oauth_provider]
    app = await app_for_project(session, project, provider)
    connection = await projects.connection_row(session, project.id, slot_id)
    scope = (connection.config or {}).get("scope") if connection is not None else None
    resolved = resolve(box, app, provider, scope if isinstance(scope, str) else None)
    await delete_expired_states(session)
    state = secrets.token_urlsafe(32)
    digest = sha256_hex(state)
    verifier = pkce.new_verifier()
    redirect_uri = public_url.rstrip("/") + CALLBACK_PATH
    session.add(
        OAuthState(
            digest=digest,
            project_id=project.id,
            slot_id=slot_id,
            user_id=principal.user_id,
            app_id=app.id,
            verifier_sealed=box.seal(verifier, state_context(digest)),
            redirect_uri=redirect_uri,
            return_url=returned,
            expires_at=utcnow() + ttl,
        )
    )
    await session.flush()
    params = {
        "response_type": "code",
        "client_id": resolved.client.client_id,
        "redirect_uri": redirect_uri,
        "scope": resolved.scope,
        "state": state,
        "code_challenge": pkce.s256_challenge(verifier),
        "code_challenge_method": "S256",
        **provider.authorize_params,
    }
    separator = "&" if "?" in resolved.authorize_url else "?"
    return resolved.authorize_url + separator + urlencode(params)


# -- callback ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the callback page says: `result` is connected, denied, invalid_state, provider_error or
    token_error; `message` is for a person; where to go next."""

    result: str
    message: str
    project_id: int | None = None
    slot_id: str | None = None
    return_url: str | None = None


def _bound(row: OAuthState) -> tuple[int, str, str | None]:
    """What an outcome says the state was for (Outcome's project_id, slot_id, return_url)."""
    return row.project_id, row.slot_id, row.return_url


@dataclass(frozen=True)
class _Spent:
    state: OAuthState
    verifier: str


async def _spend_state(session: AsyncSession, box: SecretBox, state: str) -> _Spent | Outcome:
    """Mark the state used (atomically: a second callback with it loses the race) and check what it is bound to."""
    digest = sha256_hex(state)
    row = await session.scalar(select(OAuthState).where(OAuthState.digest == digest))
    if row is None:
        return Outcome("invalid_state", "This authorization link is unknown. Start again with Connect.")
    spent = await session.execute(
        update(OAuthState).where(OAuthState.id == row.id, OAuthState.used_at.is_(None)).values(used_at=utcnow())
    )
    where = _bound(row)
    if getattr(spent, "rowcount", 0) != 1:
        return Outcome("invalid_state", "This authorization was already used. Start again with Connect.", *where)
    if row.expires_at <= utcnow():
        return Outcome("invalid_state", "This authorization expired. Start again with Connect.", *where)
    # Bound to the user who started it: that user must still exist and still be allowed to edit the project.
    user = await session.get(User, row.user_id)
    org = await session.get(Organization, user.org_id) if user is not None else None
    project_row = (
        await session.execute(
            select(Organization.path)
            .join(Project, Project.org_id == Organization.id)
            .where(Project.id == row.project_id)
        )
    ).first()
    if user is None or org is None or project_row is None:
        return Outcome("invalid_state", "The project or the user who started this no longer exists.", *where)
    principal = Principal(user.id, org.id, org.path, Role.parse(user.role))
    if not principal.sees(project_row.path):
        return Outcome("invalid_state", "The user who started this may no longer edit the project.", *where)
    return _Spent(row, box.open(row.verifier_sealed, state_context(digest)))


def _provider_error(error: str, description: str | None) -> str:
    """RFC 6749 §4.1.2.1 error codes in words a person can act on."""
    said = f" The provider said: {description}" if description else ""
    hints = {
        "access_denied": "Access was denied at the provider, so nothing was connected.",
        "invalid_scope": "The provider refused the requested scopes: check the connection's or OAuth app's scope.",
        "unauthorized_client": "The provider does not allow this OAuth app to use the authorization code flow.",
        "invalid_request": "The provider refused the request: check the OAuth app's redirect URL and settings.",
        "unsupported_response_type": "The provider does not support the authorization code flow for this app.",
        "server_error": "The provider had an internal error. Try again.",
        "temporarily_unavailable": "The provider is temporarily unavailable. Try again later.",
    }
    return hints.get(error, f"The provider answered with the error {error!r}.") + said


async def callback(
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    http: httpx.AsyncClient,
    params: dict[str, str],
    *,
    context: AppContext | None = None,
    address: str | None = None,
    user_agent: str | None = None,
) -> Outcome:
    """Handle the provider's redirect: spend the state, exchange the code, store the tokens. A (re)connect marks
    the connection connected and resumes the runs parked on it (`projects.health.mark_reconnected`); with
    `context` the executor hears of them once the tokens are committed. The stored tokens are recorded in the
    audit log as a change by the person who started Connect, from the browser (`address`) they came back in."""
    state = params.get("state") or ""
    if not state:
        return Outcome("invalid_state", "The provider's answer has no state. Start again with Connect.")
    async with sessions() as session:
        spent = await _spend_state(session, box, state)
        await session.commit()  # spent even when refused below: a state is used once, whatever happened
    if isinstance(spent, Outcome):
        return spent
    row = spent.state
    where = _bound(row)
    if params.get("error"):
        error = params["error"]
        result = "denied" if error == "access_denied" else "provider_error"
        return Outcome(result, _provider_error(error, params.get("error_description")), *where)
    code = params.get("code")
    if not code:
        return Outcome("provider_error", "The provider's answer has neither a code nor an error.", *where)
    async with sessions() as session:
        app = await session.get(OAuthApp, row.app_id)
        project = await session.get(Project, row.project_id)
        slot = await projects.pinned_slot(session, project, row.slot_id) if project is not None else None
        if app is None or slot is None:
            return Outcome("token_error", "The OAuth app or the connection was removed meanwhile.", *where)
        resolved = resolve(box, app, PROVIDERS[app.provider])
    try:
        tokens = await exchange_code(http, resolved.client, code, row.redirect_uri, spent.verifier, EXCHANGE_LIMITS)
    except TokenRefused as refused:
        return Outcome(
            "token_error",
            f"The provider's token endpoint refused the code ({refused.error})."
            + (f" It said: {refused.description}" if refused.description else ""),
            *where,
        )
    except TokenUnavailable as error:
        return Outcome("token_error", f"The provider's token endpoint failed: {error}. Try again.", *where)
    async with unit_of_work(sessions) as session:
        who = Actor(Channel.CONSOLE, row.user_id, None, None, None, address=address, user_agent=user_agent)
        begin_audit(session, who, "GET /oauth/callback", record_empty=False)
        connection = await projects.connection_row(session, row.project_id, row.slot_id, lock=True)
        project = await session.get(Project, row.project_id)
        slot = await projects.pinned_slot(session, project, row.slot_id) if project is not None else None
        if connection is None or project is None or slot is None or connection.type != slot["type"]:
            return Outcome("token_error", "The connection was removed meanwhile.", *where)
        projects.store_obtained(box, connection, {**tokens.secrets(), "appId": resolved.app.id}, slot)
        project.updated_at = utcnow()
        await health.mark_reconnected(session, row.project_id, row.slot_id, context=context)
        if not tokens.refresh_token and tokens.expires_at is not None:
            # No refresh token: when this access token ends, only a person can renew it. Said ahead of time.
            await health.record_status(session, connection.id, ConnectionStatus.EXPIRING)
    return Outcome("connected", "Connected. Runs of this project now use this account.", *where)


async def delete_expired_states(session: AsyncSession) -> None:
    """Expired states are worth nothing (a used one is kept until then, so a replay is told it was used)."""
    await session.execute(delete(OAuthState).where(OAuthState.expires_at < utcnow()))
