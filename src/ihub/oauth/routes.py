"""`/api/v1/oauth/app` (an organization's OAuth apps), `/api/v1/project/{id}/connection/{slot}/authorize`
(Connect), and `GET /oauth/callback`, where the provider sends the person's browser back."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ihub.common.body import json_or_form, request_body
from ihub.common.context import Context, Session, client_address
from ihub.common.ids import path_id
from ihub.common.responses import errors
from ihub.console.web import render
from ihub.egress import egress_client, policy_from_settings
from ihub.oauth import service
from ihub.oauth.schemas import AuthorizeIn, AuthorizeOut, OAuthAppIn, OAuthAppList
from ihub.provisioning.deps import Caller

router = APIRouter(tags=["oauth"], responses=errors(400, 401, 403, 404))

HEADINGS = {
    "connected": "Connected",
    "denied": "Access denied",
    "invalid_state": "Authorization not valid",
    "provider_error": "The provider reported an error",
    "token_error": "Connecting failed",
}


@router.get("/api/v1/oauth/app/org/{org_id}", response_model=OAuthAppList)
async def list_apps(org_id: str, caller: Caller, session: Session) -> OAuthAppList:
    """The OAuth apps in effect in the organization: its own and those inherited from the nearest ancestor
    that has one per provider. Client secrets are never returned."""
    apps = await service.list_apps(session, caller, path_id(org_id, "organization"))
    return OAuthAppList(apps=list(apps))


@router.put(
    "/api/v1/oauth/app/org/{org_id}/{provider}",
    response_model=OAuthAppList,
    openapi_extra=request_body(OAuthAppIn, example={"clientId": "abc123", "clientSecret": "<client secret>"}),
)
async def put_app(
    org_id: str,
    provider: str,
    caller: Caller,
    context: Context,
    session: Session,
    body: OAuthAppIn = json_or_form(OAuthAppIn),
) -> OAuthAppList:
    """Create or replace the organization's OAuth app for a provider (Owner or Admin). Sub-organizations use it
    unless they set their own. The client secret is stored encrypted and never returned."""
    app = await service.put_app(session, context.box, caller, path_id(org_id, "organization"), provider, body)
    return OAuthAppList(apps=[app])


@router.delete("/api/v1/oauth/app/org/{org_id}/{provider}", response_model=OAuthAppList)
async def delete_app(org_id: str, provider: str, caller: Caller, session: Session) -> OAuthAppList:
    """Remove the organization's own app for a provider (an ancestor's, if any, applies again)."""
    return OAuthAppList(apps=[await service.delete_app(session, caller, path_id(org_id, "organization"), provider)])


@router.post(
    "/api/v1/project/{project_id}/connection/{slot}/authorize",
    response_model=AuthorizeOut,
    openapi_extra=request_body(AuthorizeIn, example={"returnUrl": "https://hub.example.com/console/"}, required=False),
)
async def authorize(
    project_id: str,
    slot: str,
    caller: Caller,
    context: Context,
    session: Session,
    body: AuthorizeIn = json_or_form(AuthorizeIn),
) -> AuthorizeOut:
    """Start Connect: a single-use authorization URL (valid IHUB_OAUTH_STATE_TTL_MINUTES) to open in the browser
    of the person whose account the connection will use. The provider sends them back to `/oauth/callback`."""
    url = await service.authorize(
        session,
        context.box,
        caller,
        path_id(project_id, "project"),
        slot,
        public_url=context.settings.public_url,
        ttl=timedelta(minutes=context.settings.oauth_state_ttl_minutes),
        return_url=body.return_url,
    )
    return AuthorizeOut(authorization_url=url)


@router.get("/oauth/callback", include_in_schema=False, response_class=HTMLResponse)
async def callback(request: Request, context: Context) -> HTMLResponse:
    """The provider's redirect (RFC 6749 §4.1.2): a page that says what happened. No sign-in needed: the state
    is the proof, and it is bound to the user who started Connect."""
    params = {key: value for key, value in request.query_params.items()}
    # The token endpoint is called like any outgoing call: through the egress policy. Callbacks are rare (a
    # person connecting), so a client of their own costs nothing worth pooling.
    async with egress_client(policy_from_settings(context.settings), timeout=30.0) as http:
        outcome = await service.callback(
            context.sessions,
            context.box,
            http,
            params,
            context=context,
            address=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    back = outcome.return_url or (f"/console/project/{outcome.project_id}" if outcome.project_id else None)
    status = 200 if outcome.result == "connected" else 400
    return render(request, "oauth_callback.html", status, outcome=outcome, heading=HEADINGS[outcome.result], back=back)
