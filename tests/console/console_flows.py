"""Projects, flows, runs and people for the console's trigger, runs and system page tests, set up through the
API (and, for bulk run rows, straight into the database)."""

from __future__ import annotations

import html
import re
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from console_kit import Browser, signed_in

TESTS = Path(__file__).resolve().parents[1]
for folder in ("incoming", "flows"):
    if str(TESTS / folder) not in sys.path:
        sys.path.insert(0, str(TESTS / folder))

from ihub.runs.models import Run  # noqa: E402

ECHO = {
    "key": "echo",
    "name": "Answer at once",
    "trigger": {"type": "manual"},
    "steps": [{"id": "reply", "type": "respond", "status": 200, "body": {"got": "{{ trigger.body }}"}}],
}
WAITING = {"key": "waiting", "trigger": "manual", "steps": [{"id": "pause", "type": "delay", "seconds": 60}]}
HOOKED = {
    "key": "hooked",
    "name": "Called by a system",
    "trigger": {"type": "jwt"},
    "steps": [{"id": "reply", "type": "respond", "status": 200, "body": {"summary": "{{ trigger.body.summary }}"}}],
}


async def make_project(
    client: httpx.AsyncClient, auth: dict[str, str], flows: list[dict[str, Any]], org_id: str = "1"
) -> dict[str, Any]:
    """A template with `flows` and a project of it in `org_id`; returns the project as the API shows it."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    definition = {"connections": [], "flows": flows}
    response = await client.post(
        f"/api/v1/template/org/{org_id}", json={"name": name, "description": "", "definition": definition}, headers=auth
    )
    assert response.status_code == 200, response.text
    template_id = response.json()["templates"][0]["id"]
    response = await client.post(
        f"/api/v1/project/org/{org_id}", json={"name": name, "templateId": template_id}, headers=auth
    )
    assert response.status_code == 200, response.text
    project: dict[str, Any] = response.json()["projects"][0]
    return project


def flow_id(project: dict[str, Any], key: str) -> int:
    return int(next(f["id"] for f in project["flows"] if f["key"] == key))


async def add_org(client: httpx.AsyncClient, auth: dict[str, str], parent: str = "1") -> str:
    response = await client.post(
        "/api/v1/org", json={"name": f"org-{uuid.uuid4().hex[:8]}", "parentId": parent}, headers=auth
    )
    assert response.status_code == 200, response.text
    return str(response.json()["organizations"][0]["id"])


async def console_user(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], http: httpx.AsyncClient, org_id: str, role: str
) -> Browser:
    """A new user of `role` in `org_id`, signed in to the console in `http`."""
    email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    response = await client.post(
        f"/api/v1/user/org/{org_id}", json=[{"name": f"{role} person", "email": email, "role": role}], headers=auth
    )
    assert response.status_code == 200, response.text
    return await signed_in(app, http, int(response.json()["users"][0]["id"]))


async def insert_runs(app: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Finished runs written straight into the table (terminal statuses: no executor picks them up)."""
    async with app.state.context.sessions() as session:
        runs = [
            Run(
                project_id=row["project_id"],
                flow_id=row["flow_id"],
                flow_version=1,
                status=row.get("status", "succeeded"),
                trigger_type="manual",
                trigger={"body": {"n": index}},
                created_at=row.get("created_at") or datetime.now().astimezone(),
            )
            for index, row in enumerate(rows)
        ]
        session.add_all(runs)
        await session.commit()
        return [run.id for run in runs]


def input_value(page: str, element_id: str) -> str:
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*value="([^"]*)"', page)
    assert found, f"no input #{element_id} on the page"
    return html.unescape(found.group(1))


def textarea(page: str, element_id: str) -> str | None:
    found = re.search(rf'<textarea id="{re.escape(element_id)}"[^>]*>(.*?)</textarea>', page, re.S)
    return html.unescape(found.group(1)) if found else None


RUN_LINK = re.compile(r'<td><a href="/console/run/(\d+)">#')


def listed_runs(page: str) -> list[int]:
    return [int(run_id) for run_id in RUN_LINK.findall(page)]


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return html.unescape(found.group(1)) if found else None
