"""Helpers for incoming-trigger tests: flows made through the API, trigger clients, signed assertions.

Assertions are signed with PyJWT, as the seed's Python client does, so the tests speak what real
clients send rather than what ihub's own code would produce.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from api_helpers import login_new_user
from ihub.incoming.access import STATE_TTL_SECONDS

PUBLIC_URL = "http://testserver"
TOKEN_PATH = "/prod/incoming/token"
AUD = PUBLIC_URL + TOKEN_PATH
GRANT = "urn:ihub:jwt:bearer"
SEED_TICKET = {"issueKey": "SERVICENOW-1", "description": "HEJ", "summary": "Ticket from test case"}

JIRA_SLOT = {"id": "jira", "type": "jira", "name": "Jira"}
ASYNC_FLOW: dict[str, Any] = {
    "key": "create-issue",
    "name": "Create a Jira issue from a ServiceNow ticket",
    "trigger": {"type": "jwt"},
    "steps": [
        {
            "id": "create",
            "type": "http",
            "connection": "jira",
            "method": "POST",
            "path": "/rest/api/3/issue",
            "json": {
                "fields": {
                    "project": {"key": "SUP"},
                    "issuetype": {"name": "Task"},
                    "summary": "{{ trigger.body.summary }}",
                    "description": "{{ trigger.body.description }}",
                    "labels": ["{{ trigger.body.issueKey }}"],
                }
            },
        }
    ],
}
OTHER_FLOW: dict[str, Any] = {**copy.deepcopy(ASYNC_FLOW), "key": "other", "name": "Another jwt flow"}
SYNC_FLOW: dict[str, Any] = {
    "key": "echo",
    "name": "Answer the caller",
    "trigger": {"type": "jwt"},
    "mode": "sync",
    "timeout": 2,
    "steps": [{"id": "reply", "type": "respond", "status": 201, "body": {"got": "{{ trigger.body.summary }}"}}],
}
MANUAL_FLOW: dict[str, Any] = {
    "key": "by-hand",
    "name": "Started by hand",
    "trigger": {"type": "manual"},
    "steps": [{"id": "reply", "type": "respond", "status": 200, "body": {}}],
}


def template_definition() -> dict[str, Any]:
    return copy.deepcopy({"connections": [JIRA_SLOT], "flows": [ASYNC_FLOW, OTHER_FLOW, SYNC_FLOW, MANUAL_FLOW]})


def sign(private_pem: str, claims: dict[str, Any], alg: str = "RS256", **header: Any) -> str:
    return jwt.encode(claims, private_pem, algorithm=alg, headers={"alg": alg, "typ": "JWT", **header})


def rs256_raw(private_pem: str, payload_text: str, header_text: str = '{"alg":"RS256","typ":"JWT"}') -> str:
    """RS256 over any payload text: for claims PyJWT refuses to encode (wrong types, NaN, ...)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_private_key(private_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)

    def enc(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{enc(header_text.encode())}.{enc(payload_text.encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{enc(signature)}"


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@dataclass
class Trigger:
    """What the trigger page shows, plus the private key it returned once."""

    iss: str
    sub: str
    aud: str
    private_key: str
    kid: str
    raw: dict[str, Any] = field(repr=False)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.iss, "sub": self.sub, "aud": self.aud, "iat": now, "exp": now + 1200}
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def assertion(self, **overrides: Any) -> str:
        return sign(self.private_key, self.claims(**overrides))


@dataclass
class Incoming:
    """Drives the API like an operator and a client would."""

    client: httpx.AsyncClient
    auth: dict[str, str]
    flows: dict[str, str] = field(default_factory=dict)
    project_id: str = ""

    async def make_flows(self, org_id: str = "1") -> dict[str, str]:
        body = {"name": f"tpl-{uuid.uuid4().hex[:8]}", "description": "t", "definition": template_definition()}
        response = await self.client.post(f"/api/v1/template/org/{org_id}", json=body, headers=self.auth)
        assert response.status_code == 200, response.text
        template_id = response.json()["templates"][0]["id"]
        body = {"name": f"prj-{uuid.uuid4().hex[:8]}", "description": "p", "templateId": template_id}
        response = await self.client.post(f"/api/v1/project/org/{org_id}", json=body, headers=self.auth)
        assert response.status_code == 200, response.text
        project = response.json()["projects"][0]
        self.project_id = project["id"]
        self.flows = {flow["key"]: flow["id"] for flow in project["flows"]}
        return self.flows

    async def org(self, parent: str = "1") -> str:
        body = {"name": f"org-{uuid.uuid4().hex[:8]}", "parentId": parent}
        response = await self.client.post("/api/v1/org", json=body, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["organizations"][0]["id"]

    async def login(self, org_id: str, role: str) -> dict[str, str]:
        """A new user of `role` in `org_id`; returns its Authorization header."""
        return await login_new_user(self.client, self.auth, org_id, role)

    async def create(self, flow_id: str, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        body = {"generateKey": True} if body is None else body
        headers = kwargs.pop("headers", self.auth)
        return await self.client.post(f"/api/v1/flow/{flow_id}/trigger/jwt", json=body, headers=headers, **kwargs)

    async def trigger(self, key: str = "create-issue", body: dict[str, Any] | None = None) -> Trigger:
        response = await self.create(self.flows[key], body)
        assert response.status_code == 200, response.text
        data = response.json()["triggers"][0]
        return Trigger(data["iss"], data["sub"], data["aud"], data.get("privateKey", ""), data.get("kid", ""), data)

    async def token(self, assertion: str, path: str = TOKEN_PATH, grant_type: str = GRANT) -> httpx.Response:
        return await self.client.post(path, json={"grant_type": grant_type, "assertion": assertion})

    async def access_token(self, trigger: Trigger, path: str = TOKEN_PATH) -> str:
        aud = PUBLIC_URL + path
        response = await self.token(trigger.assertion(aud=aud), path)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    async def webhook(
        self, token: str | None, body: Any = None, path: str = "/prod/incoming/webhook/jwt", **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            kwargs["json"] = body
        return await self.client.post(path, headers=headers, **kwargs)


async def get_owner_auth(app: Any, client: httpx.AsyncClient) -> dict[str, str]:
    """The first Owner's Authorization header for an app built by a fixture of this folder."""
    import hashlib

    from ihub.bootstrap import initialize

    context = app.state.context
    async with context.sessions() as session:
        first = await initialize(session, context.box)
        await session.commit()
    assert first is not None
    nonce = uuid.uuid4().hex
    digest = hashlib.sha256((first.secret + nonce).encode()).hexdigest()
    response = await client.post("/api/v1/token", json={"userId": str(first.user_id), "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text
    return {"Authorization": response.json()["tokens"][0]["token"]}


async def within_client_cache_ttl(request: Callable[[], Awaitable[httpx.Response]], status: int) -> httpx.Response:
    """Repeat `request` until it answers `status`, for a change to a client the hub's per-process cache did not
    see (another process, a direct database write) that was committed before this call.

    Only a request that *started* within STATE_TTL_SECONDS of the change may still get the old answer: the
    cached entry is stamped before its database read, so it expires by then. Start times, not durations, are
    compared, so a loaded machine that slows each request down does not make the check fail."""
    changed = time.monotonic()
    while True:
        started = time.monotonic()
        response = await request()
        if response.status_code == status:
            return response
        assert started - changed < STATE_TTL_SECONDS, f"still {response.status_code} after the TTL: {response.text}"
        await asyncio.sleep(0.25)
