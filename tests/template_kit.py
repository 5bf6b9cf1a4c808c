"""For template and project tests: a helper that builds orgs, users of each role, templates.

Importable from any test folder (the root conftest puts tests/ on sys.path); each folder's conftest
re-exports the `hub` fixture.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api_helpers import login_new_user

JIRA_FLOW: dict[str, Any] = {
    "key": "create-issue",
    "name": "Create a Jira issue",
    "trigger": {"type": "jwt"},
    "steps": [
        {
            "id": "create",
            "type": "http",
            "connection": "jira",
            "method": "POST",
            "path": "/rest/api/3/issue",
            "json": {"fields": {"summary": "{{ trigger.body.summary }}"}},
        }
    ],
}


# JIRA_FLOW's template as a person types it into the console (YAML), with one jira slot.
JIRA_DEFINITION_YAML = """\
connections:
  - id: jira
    type: jira
    name: Jira Cloud
flows:
  - key: create-issue
    name: Create a Jira issue
    trigger: {type: jwt}
    steps:
      - id: create
        type: http
        connection: jira
        method: POST
        path: /rest/api/3/issue
        json: {fields: {summary: "{{ trigger.body.summary }}"}}
"""


def definition(*, slots: list[dict[str, Any]] | None = None, flows: list[dict[str, Any]] | None = None) -> dict:
    """A valid definition: a jira slot and one jwt flow, unless told otherwise."""
    return {
        "connections": copy.deepcopy(slots if slots is not None else [{"id": "jira", "type": "jira", "name": "Jira"}]),
        "flows": copy.deepcopy(flows if flows is not None else [JIRA_FLOW]),
    }


@dataclass
class Hub:
    """Drives /api/v1 as a client would; set-up calls must succeed."""

    client: httpx.AsyncClient
    auth: dict[str, str]
    definition = staticmethod(definition)
    jira_flow = JIRA_FLOW

    async def org(self, name: str | None = None, parent: str = "1") -> str:
        name = name or f"org-{uuid.uuid4().hex[:8]}"
        response = await self.client.post("/api/v1/org", json={"name": name, "parentId": parent}, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["organizations"][0]["id"]

    async def login(self, org_id: str, role: str) -> dict[str, str]:
        """A new user of `role` in `org_id`; returns its Authorization header."""
        return await login_new_user(self.client, self.auth, org_id, role)

    async def template(self, org_id: str = "1", name: str | None = None, **kwargs: Any) -> dict[str, Any]:
        body = {"name": name or f"tpl-{uuid.uuid4().hex[:8]}", "description": "d", "definition": definition(**kwargs)}
        response = await self.client.post(f"/api/v1/template/org/{org_id}", json=body, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["templates"][0]

    async def project(self, org_id: str, template_id: str, name: str | None = None) -> dict[str, Any]:
        body = {"name": name or f"prj-{uuid.uuid4().hex[:8]}", "description": "p", "templateId": template_id}
        response = await self.client.post(f"/api/v1/project/org/{org_id}", json=body, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["projects"][0]


@pytest.fixture
def hub(client: httpx.AsyncClient, auth: dict[str, str]) -> Hub:
    return Hub(client, auth)
