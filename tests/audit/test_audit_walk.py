"""Every mutating `/api/v1` operation, found by walking the OpenAPI document, leaves exactly one audit entry
with the caller as actor and the operation as action; a refused request leaves none; no secret ever appears.

A new POST/PUT/PATCH/DELETE route fails `test_every_mutating_operation_is_covered` until it gets an example
call in OPERATIONS below (or a reason in NOT_AUDITED), so no endpoint can be added unaudited."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from audit_kit import count, entries

from ihub.app import create_app
from ihub.config import Settings

pytestmark = pytest.mark.anyio

MUTATING = {"post", "put", "patch", "delete"}

# Mutating operations that are not changes made by a person, with the reason (docs/operations.md).
NOT_AUDITED = {
    # Exchanging a signed nonce for a session token is authentication, like a console sign-in.
    ("POST", "/api/v1/token"): "authentication",
    # Triggers from external systems start runs; they are run history, not configuration.
    ("POST", "/incoming/token"): "trigger",
    ("POST", "/{env}/incoming/token"): "trigger",
    ("POST", "/incoming/webhook/jwt"): "trigger",
    ("POST", "/{env}/incoming/webhook/jwt"): "trigger",
}

JIRA_TOKEN = "jira-secret-" + uuid.uuid4().hex
OAUTH_CLIENT_SECRET = "oauth-client-secret-" + uuid.uuid4().hex
# A port nothing listens on: the connection test's probe is refused at once and records `error`.
CLOSED = "http://127.0.0.1:9"


def definition(note: str = "v1") -> dict[str, Any]:
    return {
        "connections": [
            {"id": "jira", "type": "jira", "name": "Jira"},
            {"id": "crm", "type": "oauth2_authorization_code", "name": "CRM"},
        ],
        "flows": [
            {
                "key": "f",
                "name": note,
                "trigger": {"type": "jwt"},
                "steps": [{"id": "call", "type": "http", "connection": "jira", "path": "/x"}],
            }
        ],
    }


@dataclass
class World:
    """What the calls create and later ones refer to."""

    client: httpx.AsyncClient
    auth: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)

    async def call(self, method: str, url: str, body: Any = None) -> httpx.Response:
        return await self.client.request(method, url, json=body, headers=self.auth)


Call = Callable[[World], Awaitable[httpx.Response]]


async def create_org(w: World) -> httpx.Response:
    response = await w.call("POST", "/api/v1/org", {"name": f"o-{uuid.uuid4().hex[:6]}", "parentId": "1"})
    w.ids["org"] = response.json()["organizations"][0]["id"]
    return response


async def create_user(w: World) -> httpx.Response:
    email = f"u-{uuid.uuid4().hex[:6]}@example.com"
    body = [{"name": "U", "email": email, "role": "Member"}]
    response = await w.call("POST", f"/api/v1/user/org/{w.ids['org']}", body)
    w.ids["user"] = response.json()["users"][0]["id"]
    return response


async def generate_key(w: World) -> httpx.Response:
    response = await w.call("POST", f"/api/v1/user/{w.ids['user']}/key")
    w.secrets.append(response.json()["keys"][0]["secret"])
    return response


async def put_oauth_app(w: World) -> httpx.Response:
    body = {
        "clientId": "client-1",
        "clientSecret": OAUTH_CLIENT_SECRET,
        "authorizeUrl": "http://127.0.0.1:9/authorize",
        "tokenUrl": "http://127.0.0.1:9/token",
    }
    return await w.call("PUT", "/api/v1/oauth/app/org/1/generic", body)


async def create_template(w: World) -> httpx.Response:
    body = {"name": f"t-{uuid.uuid4().hex[:6]}", "description": "d", "definition": definition()}
    response = await w.call("POST", "/api/v1/template/org/1", body)
    w.ids["template"] = response.json()["templates"][0]["id"]
    return response


async def create_project(w: World) -> httpx.Response:
    body = {"name": f"p-{uuid.uuid4().hex[:6]}", "templateId": w.ids["template"]}
    response = await w.call("POST", "/api/v1/project/org/1", body)
    project = response.json()["projects"][0]
    w.ids["project"] = project["id"]
    w.ids["flow"] = project["flows"][0]["id"]
    return response


async def update_project(w: World) -> httpx.Response:
    connections = [
        {
            "id": "jira",
            "details": {"type": "jira", "siteUrl": CLOSED, "email": "bot@example.com", "apiToken": JIRA_TOKEN},
        },
        {"id": "crm", "details": {"type": "oauth2_authorization_code", "baseUrl": CLOSED}},
    ]
    return await w.call("PUT", f"/api/v1/project/{w.ids['project']}", {"connections": connections})


async def update_template(w: World) -> httpx.Response:
    return await w.call("PUT", f"/api/v1/template/{w.ids['template']}", {"definition": definition("v2")})


async def run_flow(w: World) -> httpx.Response:
    response = await w.call("POST", f"/api/v1/flow/{w.ids['flow']}/run", {"n": 1})
    w.ids["run"] = response.json()["runId"]
    return response


async def create_trigger(w: World) -> httpx.Response:
    response = await w.call("POST", f"/api/v1/flow/{w.ids['flow']}/trigger/jwt", {"generateKey": True})
    trigger = response.json()["triggers"][0]
    w.ids["iss"], w.ids["kid"] = trigger["iss"], trigger["kid"]
    w.secrets.append(trigger["privateKey"])
    return response


async def start_replay(w: World) -> httpx.Response:
    # The run cancelled just before: without a worker in these tests the batch stays pending, so it can be
    # paused, resumed and cancelled below.
    response = await w.call("POST", "/api/v1/org/1/replays", {"flow": w.ids["flow"], "status": "cancelled", "rate": 1})
    w.ids["replay"] = response.json()["replays"][0]["id"]
    return response


async def create_event_endpoint(w: World) -> httpx.Response:
    body = {"url": CLOSED + "/hook", "description": "ops"}
    response = await w.call("POST", "/api/v1/event-endpoint/org/1", body)
    endpoint = response.json()["endpoints"][0]
    w.ids["endpoint"] = endpoint["id"]
    w.secrets.append(endpoint["secret"])
    return response


async def send_test_event(w: World) -> httpx.Response:
    response = await w.call("POST", f"/api/v1/event-endpoint/{w.ids['endpoint']}/test")
    w.ids["delivery"] = response.json()["deliveries"][0]["id"]
    return response


async def rotate_event_secret(w: World) -> httpx.Response:
    response = await w.call("POST", f"/api/v1/event-endpoint/{w.ids['endpoint']}/rotate-secret")
    w.secrets.append(response.json()["endpoints"][0]["secret"])
    return response


def simple(method: str, url: str, body: Any = None) -> Call:
    async def call(w: World) -> httpx.Response:
        return await w.call(method, url.format(**w.ids), body)

    return call


# In the order they run: later calls use what earlier ones created.
OPERATIONS: dict[tuple[str, str], Call] = {
    ("POST", "/api/v1/org"): create_org,
    ("PUT", "/api/v1/org/{org_id}"): simple("PUT", "/api/v1/org/{org}", {"name": "renamed"}),
    ("POST", "/api/v1/user/org/{org_id}"): create_user,
    ("PUT", "/api/v1/user/{user_id}"): simple("PUT", "/api/v1/user/{user}", {"role": "Admin"}),
    ("POST", "/api/v1/user/{user_id}/key"): generate_key,
    ("PUT", "/api/v1/oauth/app/org/{org_id}/{provider}"): put_oauth_app,
    ("POST", "/api/v1/template/org/{org_id}"): create_template,
    ("POST", "/api/v1/project/org/{org_id}"): create_project,
    ("PUT", "/api/v1/project/{project_id}"): update_project,
    ("PUT", "/api/v1/template/{template_id}"): update_template,
    ("POST", "/api/v1/project/{project_id}/upgrade"): simple("POST", "/api/v1/project/{project}/upgrade", {}),
    ("POST", "/api/v1/project/{project_id}/connection/{slot_id}/test"): simple(
        "POST", "/api/v1/project/{project}/connection/jira/test"
    ),
    ("POST", "/api/v1/project/{project_id}/connection/{slot}/authorize"): simple(
        "POST", "/api/v1/project/{project}/connection/crm/authorize", {}
    ),
    ("POST", "/api/v1/flow/{flow_id}/run"): run_flow,
    ("POST", "/api/v1/run/{run_id}/replay"): simple("POST", "/api/v1/run/{run}/replay", {}),
    ("POST", "/api/v1/run/{run_id}/cancel"): simple("POST", "/api/v1/run/{run}/cancel"),
    ("POST", "/api/v1/org/{org_id}/replays"): start_replay,
    ("POST", "/api/v1/replays/{replay_id}/pause"): simple("POST", "/api/v1/replays/{replay}/pause"),
    ("POST", "/api/v1/replays/{replay_id}/resume"): simple("POST", "/api/v1/replays/{replay}/resume"),
    ("POST", "/api/v1/replays/{replay_id}/cancel"): simple("POST", "/api/v1/replays/{replay}/cancel"),
    ("POST", "/api/v1/flow/{flow_id}/trigger/jwt"): create_trigger,
    ("PUT", "/api/v1/flow/{flow_id}/trigger/jwt/{iss}"): simple(
        "PUT", "/api/v1/flow/{flow}/trigger/jwt/{iss}", {"enabled": False}
    ),
    ("PUT", "/api/v1/flow/{flow_id}/trigger/jwt/{iss}/key/{kid}"): simple(
        "PUT", "/api/v1/flow/{flow}/trigger/jwt/{iss}/key/{kid}", {"expiresInDays": 30}
    ),
    ("DELETE", "/api/v1/flow/{flow_id}/trigger/jwt/{iss}/key/{kid}"): simple(
        "DELETE", "/api/v1/flow/{flow}/trigger/jwt/{iss}/key/{kid}"
    ),
    ("DELETE", "/api/v1/flow/{flow_id}/trigger/jwt/{iss}"): simple("DELETE", "/api/v1/flow/{flow}/trigger/jwt/{iss}"),
    ("POST", "/api/v1/event-endpoint/org/{org_id}"): create_event_endpoint,
    ("PUT", "/api/v1/event-endpoint/{endpoint_id}"): simple(
        "PUT", "/api/v1/event-endpoint/{endpoint}", {"eventTypes": ["run.failed"]}
    ),
    ("POST", "/api/v1/event-endpoint/{endpoint_id}/test"): send_test_event,
    ("POST", "/api/v1/event-delivery/{delivery_id}/resend"): simple("POST", "/api/v1/event-delivery/{delivery}/resend"),
    ("POST", "/api/v1/event-endpoint/{endpoint_id}/rotate-secret"): rotate_event_secret,
    ("DELETE", "/api/v1/event-endpoint/{endpoint_id}"): simple("DELETE", "/api/v1/event-endpoint/{endpoint}"),
    ("DELETE", "/api/v1/oauth/app/org/{org_id}/{provider}"): simple("DELETE", "/api/v1/oauth/app/org/1/generic"),
    ("DELETE", "/api/v1/project/{project_id}"): simple("DELETE", "/api/v1/project/{project}"),
    ("DELETE", "/api/v1/template/{template_id}"): simple("DELETE", "/api/v1/template/{template}"),
    ("DELETE", "/api/v1/user/{user_id}"): simple("DELETE", "/api/v1/user/{user}"),
    ("DELETE", "/api/v1/org/{org_id}"): simple("DELETE", "/api/v1/org/{org}"),
}


def mutating_operations(app: Any) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if method in MUTATING
    }


def test_every_mutating_operation_is_covered(tmp_path: Path) -> None:
    # The OpenAPI document needs no database: once, not per backend.
    settings = Settings(data_dir=tmp_path, secret_key="k" * 48, _env_file=None)
    found = mutating_operations(create_app(settings, run_worker=False))
    missing = found - set(OPERATIONS) - set(NOT_AUDITED)
    assert not missing, f"add an example call to OPERATIONS (or a reason to NOT_AUDITED) for {sorted(missing)}"
    assert not set(OPERATIONS) - found, "OPERATIONS names operations the API no longer has"


async def test_each_mutating_operation_leaves_exactly_one_entry(app, client, auth, owner) -> None:  # noqa: ANN001
    world = World(client, auth)
    for (method, path), call in OPERATIONS.items():
        before = await count(app)
        response = await call(world)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        written = (await entries(app))[before:]
        assert len(written) == 1, f"{method} {path} left {len(written)} entries"
        (entry,) = written
        assert entry.action == f"{method} {path}"
        assert entry.channel == "api"
        assert entry.actor_user_id == int(owner.user_id)
        assert entry.address == "127.0.0.1"
    # No secret value anywhere in the log: API key secrets, the trigger's private key, connection values, the
    # OAuth client secret.
    text = json.dumps([(e.changes, e.actor_name, e.action) for e in await entries(app)])
    for secret in [*world.secrets, JIRA_TOKEN, OAUTH_CLIENT_SECRET]:
        assert secret not in text
        assert json.dumps(secret)[1:-1] not in text  # nor JSON-escaped (the PEM's newlines)
    # ... while the log says that they were set.
    assert '"apiToken"' not in text or "[secret]" in text
    assert "[secret]" in text


async def test_a_refused_request_leaves_no_entry(app, client, auth, owner) -> None:  # noqa: ANN001
    before = await count(app)
    bad = await client.post("/api/v1/org", json={"name": "", "parentId": "1"}, headers=auth)
    assert bad.status_code == 400
    missing = await client.put("/api/v1/project/999999", json={"name": "x"}, headers=auth)
    assert missing.status_code == 404
    conflict = await client.delete("/api/v1/org/1", headers=auth)
    assert conflict.status_code in (400, 403, 409)
    assert await count(app) == before
