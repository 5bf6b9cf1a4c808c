"""Connect (OAuth2 authorization code with PKCE) against a real authorization server (Authlib, tests/oauth/
authserver.py) on 127.0.0.1, on SQLite and PostgreSQL: the whole flow, denied consent, replayed, expired and
unknown states, returnUrl, permissions, OAuth apps, and the refresh (ahead of expiry, on 401, under concurrency,
refused)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authserver import CLIENT_ID, CLIENT_SECRET, AuthServer
from flowkit import Kit
from pytest_httpserver import HTTPServer
from sqlalchemy import update
from werkzeug import Request, Response

from ihub.db.base import utcnow
from ihub.db.engine import create_engine, create_sessionmaker
from ihub.egress import egress_client, policy_from_settings
from ihub.flows.connections import ConnectionError_
from ihub.oauth.models import OAuthState
from ihub.oauth.refresh import AuthorizationCodeTokens
from ihub.projects.service import connection_runtime

pytestmark = pytest.mark.anyio

FLOW = {"key": "f", "trigger": "manual", "steps": [{"id": "call", "type": "http", "connection": "crm", "path": "/x"}]}


def definition() -> dict[str, Any]:
    return {"connections": [{"id": "crm", "type": "oauth2_authorization_code", "name": "CRM"}], "flows": [FLOW]}


async def set_app(
    kit: Kit, authserver: AuthServer, org_id: str = "1", headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "authorizeUrl": authserver.url("/authorize"),
        "tokenUrl": authserver.url("/token"),
        "scope": "read write",
    }
    return await kit.client.put(f"/api/v1/oauth/app/org/{org_id}/generic", json=body, headers=headers or kit.auth)


def target(httpserver: HTTPServer, authserver: AuthServer) -> list[str]:
    """The API the flow calls: 200 for a token the authorization server issued and still honours, else 401."""
    seen: list[str] = []

    def handler(request: Request) -> Response:
        header = request.headers.get("Authorization", "")
        seen.append(header)
        token = header.removeprefix("Bearer ")
        if header.startswith("Bearer ") and authserver.valid_access(token):
            return Response(json.dumps({"ok": True}), content_type="application/json")
        return Response("no", status=401)

    httpserver.expect_request("/x").respond_with_handler(handler)
    return seen


async def new_project(kit: Kit, httpserver: HTTPServer, org_id: str = "1") -> dict[str, Any]:
    connection = {"id": "crm", "details": {"type": "oauth2_authorization_code", "baseUrl": httpserver.url_for("/")}}
    return await kit.project(definition(), [connection], org_id=org_id)


async def authorize(kit: Kit, project: dict[str, Any], **body: Any) -> httpx.Response:
    return await kit.client.post(
        f"/api/v1/project/{project['id']}/connection/crm/authorize", json=body, headers=kit.auth
    )


async def consent(authserver: AuthServer, authorization_url: str) -> dict[str, str]:
    """The person's browser at the provider: it answers with a redirect to the hub's callback."""
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(authorization_url)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith("http://testserver/oauth/callback?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def connect(kit: Kit, authserver: AuthServer, project: dict[str, Any]) -> httpx.Response:
    response = await authorize(kit, project)
    assert response.status_code == 200, response.text
    params = await consent(authserver, response.json()["authorizationUrl"])
    return await kit.client.get("/oauth/callback", params=params)


async def run_flow(kit: Kit, project: dict[str, Any]) -> dict[str, Any]:
    return await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}))


async def connection_view(kit: Kit, project: dict[str, Any]) -> dict[str, Any]:
    response = await kit.client.get(f"/api/v1/project/{project['id']}", headers=kit.auth)
    assert response.status_code == 200
    return response.json()["projects"][0]["connections"][0]


def issued(authserver: AuthServer) -> list[str]:
    return [t.access_token for t in authserver.tokens] + [t.refresh_token or "" for t in authserver.tokens]


# -- the code flow ---------------------------------------------------------------------------------


async def test_connect_then_the_flow_calls_with_the_access_token(
    kit: Kit, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    seen = target(httpserver, authserver)
    assert (await set_app(kit, authserver)).status_code == 200
    project = await new_project(kit, httpserver)
    assert (await connection_view(kit, project))["configured"] is False  # not until tokens are stored

    response = await authorize(kit, project)
    url = response.json()["authorizationUrl"]
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["http://testserver/oauth/callback"] and query["scope"] == ["read write"]
    params = await consent(authserver, url)
    page = await kit.client.get("/oauth/callback", params=params)
    assert page.status_code == 200 and "Connected" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert f'href="/console/project/{project["id"]}"' in page.text
    assert authserver.challenges == [(query["code_challenge"][0], "S256")] and authserver.exchanges == 1

    view = await connection_view(kit, project)
    assert view["configured"] is True and view["missing"] == []
    assert set(view["secretsSet"]) == {"accessToken", "refreshToken", "expiresAt", "appId"}

    run = await run_flow(kit, project)
    assert run["status"] == "succeeded", run
    [access] = [t.access_token for t in authserver.tokens]
    assert seen == [f"Bearer {access}"]
    # Tokens and the app's secret appear in no API answer and no run record.
    everything = json.dumps(run) + json.dumps(await connection_view(kit, project))
    everything += (await kit.client.get("/api/v1/oauth/app/org/1", headers=kit.auth)).text
    for secret in [*issued(authserver), CLIENT_SECRET]:
        assert secret not in everything


async def test_denied_consent_stores_nothing(kit: Kit, authserver: AuthServer, httpserver: HTTPServer) -> None:
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    authserver.consent = False
    page = await connect(kit, authserver, project)
    assert page.status_code == 400 and "Access denied" in page.text and "nothing was connected" in page.text
    assert (await connection_view(kit, project))["configured"] is False
    assert authserver.exchanges == 0


async def test_a_replayed_state_does_nothing(kit: Kit, authserver: AuthServer, httpserver: HTTPServer) -> None:
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    response = await authorize(kit, project)
    params = await consent(authserver, response.json()["authorizationUrl"])
    assert (await kit.client.get("/oauth/callback", params=params)).status_code == 200
    again = await kit.client.get("/oauth/callback", params=params)
    assert again.status_code == 400 and "already used" in again.text
    assert authserver.exchanges == 1  # the code was not sent a second time


async def test_expired_and_unknown_states_are_refused(kit: Kit, authserver: AuthServer, httpserver: HTTPServer) -> None:
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    response = await authorize(kit, project)
    params = await consent(authserver, response.json()["authorizationUrl"])
    async with kit.app.state.context.sessions() as session:
        await session.execute(update(OAuthState).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    expired = await kit.client.get("/oauth/callback", params=params)
    assert expired.status_code == 400 and "expired" in expired.text
    unknown = await kit.client.get("/oauth/callback", params={**params, "state": "not-a-state-we-made"})
    assert unknown.status_code == 400 and "unknown" in unknown.text
    missing = await kit.client.get("/oauth/callback", params={"code": "x"})
    assert missing.status_code == 400
    assert authserver.exchanges == 0 and (await connection_view(kit, project))["configured"] is False


async def test_provider_error_description_is_shown_escaped(
    kit: Kit, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    response = await authorize(kit, project)
    state = parse_qs(urlsplit(response.json()["authorizationUrl"]).query)["state"][0]
    params = {"state": state, "error": "invalid_scope", "error_description": "<script>x</script> not allowed"}
    page = await kit.client.get("/oauth/callback", params=params)
    assert page.status_code == 400 and "refused the requested scopes" in page.text
    assert "<script>x" not in page.text and "&lt;script&gt;x" in page.text


async def test_return_url_only_to_this_hub(kit: Kit, authserver: AuthServer, httpserver: HTTPServer) -> None:
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    refused = await authorize(kit, project, returnUrl="https://evil.example/console/")
    assert refused.status_code == 400 and "returnUrl" in refused.text
    accepted = await authorize(kit, project, returnUrl="http://testserver/console/somewhere")
    params = await consent(authserver, accepted.json()["authorizationUrl"])
    page = await kit.client.get("/oauth/callback", params=params)
    assert 'href="http://testserver/console/somewhere"' in page.text


async def test_permissions_and_app_inheritance(kit: Kit, authserver: AuthServer, httpserver: HTTPServer) -> None:
    await set_app(kit, authserver)
    left, right = await kit.org(), await kit.org()
    project = await new_project(kit, httpserver, org_id=left)
    stranger = await kit.login(right, "Member")
    response = await kit.client.post(
        f"/api/v1/project/{project['id']}/connection/crm/authorize", json={}, headers=stranger
    )
    assert response.status_code == 404
    member = await kit.login(left, "Member")
    response = await kit.client.post(
        f"/api/v1/project/{project['id']}/connection/crm/authorize", json={}, headers=member
    )
    assert response.status_code == 200  # whoever may edit the project may connect it
    # The root's app is inherited (without its secret); a Member may not set one; an Admin may bring their own.
    listed = await kit.client.get(f"/api/v1/oauth/app/org/{left}", headers=member)
    assert listed.json()["apps"][0]["inherited"] is True and CLIENT_SECRET not in listed.text
    assert (await set_app(kit, authserver, left, member)).status_code == 403
    admin = await kit.login(left, "Admin")
    own = await set_app(kit, authserver, left, admin)
    assert own.status_code == 200 and CLIENT_SECRET not in own.text and own.json()["apps"][0]["inherited"] is False
    listed = await kit.client.get(f"/api/v1/oauth/app/org/{left}", headers=member)
    assert listed.json()["apps"][0]["orgId"] == left
    assert (await kit.client.get(f"/api/v1/oauth/app/org/{left}", headers=stranger)).status_code == 404
    # Tokens are obtained by Connect, never entered.
    entered = await kit.client.put(
        f"/api/v1/project/{project['id']}",
        json={"connections": [{"id": "crm", "details": {"type": "oauth2_authorization_code", "accessToken": "x"}}]},
        headers=kit.auth,
    )
    assert entered.status_code == 400 and "set by Connect" in entered.text


# -- refresh ---------------------------------------------------------------------------------------


async def test_refresh_ahead_of_expiry(kit: Kit, authserver: AuthServer, httpserver: HTTPServer) -> None:
    seen = target(httpserver, authserver)
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    authserver.expires_in = 30  # less than the 60 s ihub keeps in hand
    assert (await connect(kit, authserver, project)).status_code == 200
    authserver.expires_in = 3600
    run = await run_flow(kit, project)
    assert run["status"] == "succeeded", run
    assert authserver.refreshes == 1
    assert seen == [f"Bearer {authserver.tokens[-1].access_token}"]
    assert authserver.tokens[0].revoked  # rotated: the first refresh token is spent
    for secret in issued(authserver):
        assert secret not in json.dumps(run)
    # The next run uses the stored, refreshed token without refreshing again.
    assert (await run_flow(kit, project))["status"] == "succeeded"
    assert authserver.refreshes == 1


async def test_refresh_once_on_401(kit: Kit, authserver: AuthServer, httpserver: HTTPServer) -> None:
    seen = target(httpserver, authserver)
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    await connect(kit, authserver, project)
    authserver.revoke_access()  # the target now refuses the token ihub holds, though it has not expired
    run = await run_flow(kit, project)
    assert run["status"] == "succeeded", run
    assert authserver.refreshes == 1 and len(seen) == 2
    assert seen[1] == f"Bearer {authserver.tokens[-1].access_token}" != seen[0]


async def test_revoked_grant_parks_runs_until_a_reconnect_resumes_them(
    kit: Kit, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    """The issue's journey: a revoked grant → needs_reconnect → runs parked, not failed → a person reconnects
    (Connect again) → the parked runs resume by themselves and succeed."""
    seen = target(httpserver, authserver)
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    await connect(kit, authserver, project)
    authserver.revoke_grant()
    parked = [
        await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}), statuses=("waiting_for_connection",))
        for _ in range(2)
    ]
    for run in parked:
        assert run["status"] == "waiting_for_connection" and run["waitingForConnection"] == "crm", run
        assert run["error"] is None  # not failed
        assert "needs to be connected again" in json.dumps(run) and "invalid_grant" in json.dumps(run)
        for secret in issued(authserver):
            assert secret not in json.dumps(run)
    view = await connection_view(kit, project)
    assert view["status"] == "needs_reconnect" and "invalid_grant" in view["statusMessage"]
    context = kit.app.state.context
    tokens = AuthorizationCodeTokens(context)
    async with context.sessions() as session:
        runtime = await connection_runtime(session, context.box, int(project["id"]), "crm")
    async with egress_client(policy_from_settings(context.settings)) as http:
        with pytest.raises(ConnectionError_) as raised:
            await tokens.access_token(http, runtime, _limits(), force=True)
    assert raised.value.kind == "needs_reconnect"
    calls_before = len(seen)
    # A person connects again: the callback stores new tokens and resumes both parked runs.
    assert (await connect(kit, authserver, project)).status_code == 200
    for run in parked:
        resumed = await kit.wait(run["id"])
        assert resumed["status"] == "succeeded", resumed
        assert [s["status"] for s in resumed["steps"]] == ["parked", "succeeded"]
    assert len(seen) == calls_before + 2  # each parked step ran once more, with the new token
    assert (await connection_view(kit, project))["status"] == "connected"
    assert (await run_flow(kit, project))["status"] == "succeeded"


async def test_without_a_refresh_token_the_connection_is_expiring(
    kit: Kit, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    target(httpserver, authserver)
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    authserver.issue_refresh_tokens = False
    assert (await connect(kit, authserver, project)).status_code == 200
    assert (await connection_view(kit, project))["status"] == "expiring"
    assert (await run_flow(kit, project))["status"] == "succeeded"  # usable until the access token ends
    authserver.issue_refresh_tokens = True
    assert (await connect(kit, authserver, project)).status_code == 200
    assert (await connection_view(kit, project))["status"] == "connected"


async def test_checking_a_connected_account_refreshes_or_says_reconnect(
    kit: Kit, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    """POST .../connection/{slot}/test on a connection a person authorized: an expired access token is
    refreshed and the check passes; a revoked grant makes the connection needs_reconnect."""
    seen = target(httpserver, authserver)

    def head(request: Request) -> Response:  # the generic type's probe: HEAD of the base URL
        seen.append(request.headers.get("Authorization", ""))
        ok = authserver.valid_access(request.headers.get("Authorization", "").removeprefix("Bearer "))
        return Response("", status=200 if ok else 401)

    httpserver.expect_request("/", method="HEAD").respond_with_handler(head)
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    await connect(kit, authserver, project)
    check = f"/api/v1/project/{project['id']}/connection/crm/test"
    authserver.revoke_access()  # the access token ends; the refresh token still works
    response = await kit.client.post(check, headers=kit.auth)
    assert response.status_code == 200, response.text
    assert response.json()["connections"][0]["status"] == "connected"
    assert authserver.refreshes == 1
    authserver.revoke_grant()
    response = await kit.client.post(check, headers=kit.auth)
    assert response.status_code == 200, response.text
    checked = response.json()["connections"][0]
    assert checked["status"] == "needs_reconnect" and "invalid_grant" in checked["statusMessage"]
    for secret in issued(authserver):
        assert secret not in response.text
    assert not seen or all("rt-" not in header for header in seen)


def _limits() -> Any:
    from ihub.egress import FetchLimits

    return FetchLimits(10.0, 1024 * 1024)


async def test_one_refresh_across_two_workers(kit: Kit, authserver: AuthServer, httpserver: HTTPServer) -> None:
    """Two workers (each its own database engine, like two processes) prepare the same expiring connection at
    once: one refresh reaches the authorization server (a rotated refresh token is spent once), both get the
    new token."""
    await set_app(kit, authserver)
    project = await new_project(kit, httpserver)
    authserver.expires_in = 30
    await connect(kit, authserver, project)
    authserver.expires_in = 3600
    context = kit.app.state.context
    workers = []
    for _ in range(2):
        engine = create_engine(context.settings.database_url)
        workers.append(
            (engine, SimpleNamespace(settings=context.settings, box=context.box, sessions=create_sessionmaker(engine)))
        )
    try:
        runtimes = []
        for _, worker in workers:
            async with worker.sessions() as session:
                runtimes.append(await connection_runtime(session, context.box, int(project["id"]), "crm"))
        old = runtimes[0]["secrets"]["token"]
        async with egress_client(policy_from_settings(context.settings)) as http:
            got = await asyncio.gather(
                *(
                    AuthorizationCodeTokens(worker).access_token(http, runtime, _limits())  # type: ignore[arg-type]
                    for (_, worker), runtime in zip(workers, runtimes, strict=True)
                )
            )
    finally:
        for engine, _ in workers:
            await engine.dispose()
    assert authserver.refreshes == 1
    assert got[0] == got[1] == authserver.tokens[-1].access_token != old


async def test_authorize_needs_an_oauth_slot_and_an_app(
    kit: Kit, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    project = await new_project(kit, httpserver)
    path = f"/api/v1/project/{project['id']}/connection/crm/authorize"
    missing = await kit.client.post(path, headers=kit.auth)  # no body at all: returnUrl is optional
    assert missing.status_code == 400 and missing.json()["metadata"]["code"] == "oauth_app_missing"
    await set_app(kit, authserver)
    assert (await kit.client.post(path, headers=kit.auth)).status_code == 200
    unknown = await kit.client.post(f"/api/v1/project/{project['id']}/connection/nope/authorize", headers=kit.auth)
    assert unknown.status_code == 404
    static = await kit.project(
        {"connections": [{"id": "crm", "type": "http", "name": "CRM"}], "flows": [FLOW]},
        [{"id": "crm", "details": {"type": "http", "baseUrl": httpserver.url_for("/")}}],
    )
    refused = await kit.client.post(f"/api/v1/project/{static['id']}/connection/crm/authorize", headers=kit.auth)
    assert refused.status_code == 400 and refused.json()["metadata"]["code"] == "not_an_oauth_connection"
    generic_without_urls = await kit.client.put(
        "/api/v1/oauth/app/org/1/generic", json={"clientId": "a", "clientSecret": "b"}, headers=kit.auth
    )
    assert generic_without_urls.status_code == 400


async def test_refresh_uses_the_app_that_obtained_the_tokens(
    kit: Kit, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    """A sub-organization that brings its own app later does not strand connections made with the inherited one:
    their refresh token belongs to the inherited app's client."""
    seen = target(httpserver, authserver)
    await set_app(kit, authserver)
    child = await kit.org()
    project = await new_project(kit, httpserver, org_id=child)
    await connect(kit, authserver, project)
    own = {"clientId": "another-client", "clientSecret": "another-secret", "authorizeUrl": authserver.url("/authorize"),
           "tokenUrl": authserver.url("/token")}  # fmt: skip
    response = await kit.client.put(f"/api/v1/oauth/app/org/{child}/generic", json=own, headers=kit.auth)
    assert response.status_code == 200
    authserver.revoke_access()
    run = await run_flow(kit, project)
    assert run["status"] == "succeeded", run
    assert authserver.refreshes == 1 and seen[-1] == f"Bearer {authserver.tokens[-1].access_token}"
