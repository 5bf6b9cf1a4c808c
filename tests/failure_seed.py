"""Failure groups for the inbox tests (API, CLI, console): one template of the root organization used by
projects of two sibling organizations (and a child of one), failed runs written straight into the database
and counted by the engine's own upsert (ihub.runs.failures.count)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ihub.runs import failures
from ihub.runs.models import Run

BASE = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SYNC = {"key": "sync", "trigger": "manual", "steps": [{"id": "create", "type": "fail", "message": "x"}]}
OTHER = {"key": "other", "trigger": "manual", "steps": [{"id": "stop", "type": "fail", "message": "y"}]}


@dataclass
class Seeded:
    template_id: int
    a: str  # an organization
    a_child: str  # a child of `a`
    b: str  # `a`'s sibling, using the same template
    projects: dict[str, dict[str, Any]]
    # failure key -> org id -> run ids (oldest first)
    runs: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    shared: str = ""  # the key all three organizations fail with
    b_only: str = ""  # the key only `b` fails with


async def post(client: httpx.AsyncClient, auth: dict[str, str], url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(url, json=body, headers=auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def seed(app: Any, client: httpx.AsyncClient, auth: dict[str, str]) -> Seeded:
    """Shared failure: a ×3, a_child ×2, b ×5 (b's last); b's own failure ×1 (the latest of all)."""
    suffix = uuid.uuid4().hex[:6]
    definition = {"connections": [], "flows": [SYNC, OTHER]}
    template = (
        await post(client, auth, "/api/v1/template/org/1", {"name": f"shared-{suffix}", "definition": definition})
    )["templates"][0]
    orgs = {}
    for name, parent in (("a", "1"), ("b", "1")):
        orgs[name] = (await post(client, auth, "/api/v1/org", {"name": f"{name}-{suffix}", "parentId": parent}))[
            "organizations"
        ][0]["id"]
    orgs["a_child"] = (await post(client, auth, "/api/v1/org", {"name": f"a-child-{suffix}", "parentId": orgs["a"]}))[
        "organizations"
    ][0]["id"]
    projects = {}
    for name, org_id in orgs.items():
        body = {"name": f"p-{name}-{suffix}", "templateId": template["id"]}
        projects[name] = (await post(client, auth, f"/api/v1/project/org/{org_id}", body))["projects"][0]
    seeded = Seeded(int(template["id"]), orgs["a"], orgs["a_child"], orgs["b"], projects)

    plan = [("a", "sync", 3, 0), ("a_child", "sync", 2, 10), ("b", "sync", 5, 20), ("b", "other", 1, 60)]
    async with app.state.context.sessions() as session:
        for name, flow_key, times, start in plan:
            project = projects[name]
            flow_id = next(int(f["id"]) for f in project["flows"] if f["key"] == flow_key)
            for n in range(times):
                at = BASE + timedelta(minutes=start + n)
                error = f"step create: record {n} of '{name}' rejected: HTTP 422" if flow_key == "sync" else "quota"
                failure = failures.describe(
                    org_id=int(orgs[name]),
                    template_id=seeded.template_id,
                    flow_key=flow_key,
                    path="create",
                    error=error,
                )
                run = Run(
                    project_id=int(project["id"]),
                    flow_id=flow_id,
                    status="failed",
                    trigger_type="manual",
                    trigger={"body": {}},
                    error=error,
                    failed_step=failure.step,
                    failure_key=failure.key,
                    created_at=at,
                )
                session.add(run)
                await session.flush()
                await failures.count(session, failure, at)
                seeded.runs.setdefault(failure.key, {}).setdefault(orgs[name], []).append(run.id)
                if flow_key == "sync":
                    seeded.shared = failure.key
                else:
                    seeded.b_only = failure.key
        await session.commit()
    return seeded
