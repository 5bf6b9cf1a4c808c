"""Connect: the tokens a person obtains at the provider change the connection, and the audit log says who
(the person who started Connect) without the tokens; an operator finds every change of a connection by its id
(what a failure on that connection leads them to)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from audit_kit import entries

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "oauth"))

from authserver import CLIENT_ID, CLIENT_SECRET, AuthServer, Running  # noqa: E402

pytestmark = pytest.mark.anyio

DEFINITION = {
    "connections": [{"id": "crm", "type": "oauth2_authorization_code", "name": "CRM"}],
    "flows": [{"key": "f", "trigger": "manual", "steps": [{"id": "call", "type": "http", "connection": "crm"}]}],
}


@pytest.fixture
def authserver() -> Iterator[AuthServer]:
    state = AuthServer(redirect_uri="http://testserver/oauth/callback")
    running = Running(state)
    yield state
    running.stop()


async def test_connect_is_recorded_as_the_person_who_started_it(app, client, auth, owner, authserver) -> None:  # noqa: ANN001
    body = {
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "authorizeUrl": authserver.url("/authorize"),
        "tokenUrl": authserver.url("/token"),
    }
    assert (await client.put("/api/v1/oauth/app/org/1/generic", json=body, headers=auth)).status_code == 200
    created = await client.post("/api/v1/template/org/1", json={"name": "t", "definition": DEFINITION}, headers=auth)
    template_id = created.json()["templates"][0]["id"]
    created = await client.post("/api/v1/project/org/1", json={"name": "p", "templateId": template_id}, headers=auth)
    project_id = created.json()["projects"][0]["id"]
    details = {"type": "oauth2_authorization_code", "baseUrl": "http://127.0.0.1:9"}
    put = await client.put(
        f"/api/v1/project/{project_id}", json={"connections": [{"id": "crm", "details": details}]}, headers=auth
    )
    assert put.status_code == 200, put.text

    started = await client.post(f"/api/v1/project/{project_id}/connection/crm/authorize", json={}, headers=auth)
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(started.json()["authorizationUrl"])
    params = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
    before = len(await entries(app))
    connected = await client.get("/oauth/callback", params=params, headers={"user-agent": "test-browser"})
    assert connected.status_code == 200, connected.text

    written = (await entries(app))[before:]
    assert len(written) == 1
    (entry,) = written
    assert (entry.action, entry.channel, entry.actor_user_id) == ("GET /oauth/callback", "console", int(owner.user_id))
    assert entry.user_agent == "test-browser" and entry.org_path == "/1/"
    assert entry.target_type == "connections"
    text = json.dumps(entry.changes)
    assert "[secret]" in text
    for token in authserver.tokens:
        assert token.access_token not in text and (token.refresh_token or "-") not in text

    # Who changed this connection: its configuration (PUT) and the Connect, newest first.
    found = await client.get(
        "/api/v1/audit", params={"targetType": "connections", "targetId": entry.target_id}, headers=auth
    )
    actions = [e["action"] for e in found.json()["entries"]]
    assert actions == ["GET /oauth/callback", "PUT /api/v1/project/{project_id}"]
