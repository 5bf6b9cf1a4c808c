"""Connect in a real browser (issue 10's "done means"): a person clicks Connect on the project page, consents at
a real OAuth2 authorization server (Authlib, on 127.0.0.1), comes back to ihub's callback page, and the project's
runs use the token; after the grant is revoked runs wait, and a Reconnect in the browser resumes them."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_kit import api_auth, api_project, owner_page, shot
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "oauth"))
from authserver import CLIENT_ID, CLIENT_SECRET, AuthServer, Running  # noqa: E402

FLOW = {"key": "f", "trigger": "manual", "steps": [{"id": "call", "type": "http", "connection": "crm", "path": "/x"}]}
DEFINITION = {"connections": [{"id": "crm", "type": "oauth2_authorization_code", "name": "CRM"}], "flows": [FLOW]}


@pytest.fixture
def authserver(hub: Any) -> Iterator[AuthServer]:
    state = AuthServer(redirect_uri=hub.url + "/oauth/callback")
    running = Running(state)
    yield state
    running.stop()


def wait_run(hub: Any, auth: dict[str, str], run_id: str, statuses: set[str]) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        run: dict[str, Any] = httpx.get(f"{hub.url}/api/v1/run/{run_id}", headers=auth).json()["runs"][0]
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run['status']}")


def test_connect_in_the_browser_then_runs_use_the_token(
    page: Any, hub: Any, authserver: AuthServer, httpserver: HTTPServer
) -> None:
    def target(request: Request) -> Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        ok = authserver.valid_access(token)
        return Response(json.dumps({"ok": ok}), status=200 if ok else 401, content_type="application/json")

    httpserver.expect_request("/x").respond_with_handler(target)
    auth = api_auth(hub)
    app = {
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "authorizeUrl": authserver.url("/authorize"),
        "tokenUrl": authserver.url("/token"),
        "scope": "read write",
    }
    assert httpx.put(f"{hub.url}/api/v1/oauth/app/org/1/generic", json=app, headers=auth).status_code == 200
    project = api_project(hub, DEFINITION, name="CRM sync")
    connection = {"id": "crm", "type": "oauth2_authorization_code", "baseUrl": httpserver.url_for("/")}
    response = httpx.put(f"{hub.url}/api/v1/project/{project['id']}", json={"connections": [connection]}, headers=auth)
    assert response.status_code == 200, response.text

    owner_page(page, hub)
    page.goto(f"/console/project/{project['id']}")
    shot(page, "project-connect")
    page.get_by_role("button", name="Connect CRM").click()
    # The browser went to the authorization server, the person consented, and the server sent it back.
    page.wait_for_url("**/oauth/callback?**")
    assert page.get_by_role("heading", name="Connected").is_visible()
    shot(page, "oauth-connected")
    page.get_by_role("link", name="Back to the project").click()
    page.wait_for_url(f"**/console/project/{project['id']}")
    assert page.get_by_role("button", name="Reconnect CRM").is_visible()

    flow_id = project["flows"][0]["id"]
    run_id = httpx.post(f"{hub.url}/api/v1/flow/{flow_id}/run", json={}, headers=auth).json()["runId"]
    assert wait_run(hub, auth, run_id, {"succeeded", "failed"})["status"] == "succeeded"

    # The person revokes the app at the provider: the next run waits instead of failing.
    authserver.revoke_grant()
    parked_id = httpx.post(f"{hub.url}/api/v1/flow/{flow_id}/run", json={}, headers=auth).json()["runId"]
    parked = wait_run(hub, auth, parked_id, {"waiting_for_connection", "failed"})
    assert parked["status"] == "waiting_for_connection", parked
    page.goto(f"/console/run/{parked_id}")
    assert page.get_by_text("This run waits for the connection").is_visible()
    shot(page, "run-waiting-for-connection")
    page.goto(f"/console/project/{project['id']}")
    page.get_by_role("button", name="Reconnect CRM").click()
    page.wait_for_url("**/oauth/callback?**")
    assert page.get_by_role("heading", name="Connected").is_visible()
    assert wait_run(hub, auth, parked_id, {"succeeded", "failed"})["status"] == "succeeded"
