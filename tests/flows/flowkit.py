"""Helpers shared by the flow, run and executor tests (test folders are not packages; the other folders'
conftest.py files import this module by path)."""

from __future__ import annotations

import asyncio
import copy
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from api_helpers import login_new_user

FINAL = ("succeeded", "failed", "cancelled")


def jira_definition(flows: list[dict[str, Any]], *, slot_type: str = "jira") -> dict[str, Any]:
    return {"connections": [{"id": "jira", "type": slot_type, "name": "Jira"}], "flows": copy.deepcopy(flows)}


def servicenow_to_jira_flow(**extra: Any) -> dict[str, Any]:
    """ServiceNow-style incident payload → Jira create-issue, answering with the created key."""
    flow = {
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
                "json": {
                    "fields": {
                        "project": {"key": "{{ config.jiraProject | default('OPS') }}"},
                        "issuetype": {"name": "Task"},
                        "summary": "[{{ trigger.body.issueKey }}] {{ trigger.body.summary }}",
                        "description": "{{ trigger.body.description }}",
                        "labels": ["servicenow", "{{ trigger.body.issueKey | lower }}"],
                    }
                },
                "expect": [201],
            },
            {
                "id": "reply",
                "type": "respond",
                "status": 201,
                "body": {"jiraKey": "{{ steps.create.output.key }}", "source": "{{ trigger.body.issueKey }}"},
            },
        ],
    }
    flow.update(extra)
    return flow


@dataclass
class Kit:
    client: httpx.AsyncClient
    auth: dict[str, str]
    app: Any

    async def project(
        self,
        definition: dict[str, Any],
        connections: list[dict[str, Any]] | None = None,
        *,
        org_id: str = "1",
        settings: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        name = f"t-{uuid.uuid4().hex[:8]}"
        response = await self.client.post(
            f"/api/v1/template/org/{org_id}",
            json={"name": name, "description": "", "definition": definition},
            headers=self.auth,
        )
        assert response.status_code == 200, response.text
        template_id = response.json()["templates"][0]["id"]
        response = await self.client.post(
            f"/api/v1/project/org/{org_id}", json={"name": name, "templateId": template_id}, headers=self.auth
        )
        assert response.status_code == 200, response.text
        project = response.json()["projects"][0]
        if connections:
            response = await self.client.put(
                f"/api/v1/project/{project['id']}", json={"connections": connections}, headers=self.auth
            )
            assert response.status_code == 200, response.text
            project = response.json()["projects"][0]
        if settings is not None:
            await self.set_settings(int(project["id"]), settings)
        return project

    async def set_settings(self, project_id: int, settings: dict[str, Any]) -> None:
        from ihub.projects.models import Project

        async with self.app.state.context.sessions() as session:
            project = await session.get(Project, project_id)
            project.settings = settings
            await session.commit()

    async def org(self, parent: str = "1") -> str:
        response = await self.client.post(
            "/api/v1/org", json={"name": f"org-{uuid.uuid4().hex[:8]}", "parentId": parent}, headers=self.auth
        )
        assert response.status_code == 200, response.text
        return response.json()["organizations"][0]["id"]

    async def login(self, org_id: str, role: str = "Member") -> dict[str, str]:
        """A new user of `role` in `org_id`; returns its Authorization header."""
        return await login_new_user(self.client, self.auth, org_id, role)

    def flow_id(self, project: dict[str, Any], key: str) -> str:
        return next(f["id"] for f in project["flows"] if f["key"] == key)

    async def trigger(self, flow_id: str, body: Any) -> str:
        response = await self.client.post(f"/api/v1/flow/{flow_id}/run", json=body, headers=self.auth)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        return response.json()["runId"]

    async def run(self, run_id: str) -> dict[str, Any]:
        """The run with all its step records (the API pages them; this follows stepsNextCursor)."""
        response = await self.client.get(f"/api/v1/run/{run_id}", headers=self.auth)
        assert response.status_code == 200, response.text
        run = response.json()["runs"][0]
        while run.get("stepsNextCursor"):
            params = {"stepsAfter": run["stepsNextCursor"]}
            response = await self.client.get(f"/api/v1/run/{run_id}", params=params, headers=self.auth)
            assert response.status_code == 200, response.text
            page = response.json()["runs"][0]
            run["steps"] += page["steps"]
            run["stepsNextCursor"] = page.get("stepsNextCursor")
        return run

    async def wait(self, run_id: str, timeout: float = 60.0, statuses: tuple[str, ...] = FINAL) -> dict[str, Any]:
        # Generous: a run that finishes returns at once; only a broken one waits this long, and two xdist workers
        # beside other jobs on two cores can take 15 s and more for a run that is merely slow.
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            run = await self.run(run_id)
            if run["status"] in statuses:
                return run
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s: {run}")
            await asyncio.sleep(0.05)


def jira_connection(base_url: str, email: str = "bot@acme.test", token: str = "jira-api-token-123") -> dict[str, Any]:
    return {"id": "jira", "details": {"type": "jira", "siteUrl": base_url, "email": email, "apiToken": token}}


def http_connection(base_url: str, **fields: Any) -> dict[str, Any]:
    return {"id": "jira", "details": {"type": "http", "baseUrl": base_url, **fields}}
