"""Permission matrix for templates and projects: every endpoint × role × target inside/outside the subtree.

    root (1) ─┬─ A ── A1        callers: an Owner, an Admin and a Member of A
              └─ B

Each case gets a fresh target org (under A1 = inside, under B = outside) holding a template used by a
project and an unused template. Inside, the role decides (200 or 403); outside, everything is 404.
All cases run in one test per backend (one app, one set of callers) and report every mismatch at once.

Each case also checks the effect, from a snapshot of the whole database before and after: a refused request
(403/404) and every read leave it identical; an allowed write changes the row's table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from db_snapshot import changed_tables, snapshot

pytestmark = pytest.mark.anyio

EVERYONE = {"Owner", "Admin", "Member"}
MANAGERS = {"Owner", "Admin"}
TEMPLATES, PROJECTS = "templates", "projects"


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: str
    allowed: set[str]
    body: Any = None
    # The table an allowed request must change; None for reads (which must change nothing).
    changes: str | None = None


ROWS = [
    Row("list templates", "GET", "/api/v1/org/{org}/templates", EVERYONE),
    Row(
        "create template",
        "POST",
        "/api/v1/template/org/{org}",
        MANAGERS,
        {"name": "new-{uid}", "definition": {}},
        TEMPLATES,
    ),
    Row("get template", "GET", "/api/v1/template/{tpl}", EVERYONE),
    Row("update template", "PUT", "/api/v1/template/{tpl}", MANAGERS, {"description": "changed"}, TEMPLATES),
    Row("delete template", "DELETE", "/api/v1/template/{free_tpl}", MANAGERS, changes=TEMPLATES),
    Row("list projects", "GET", "/api/v1/project/org/{org}", EVERYONE),
    Row(
        "create project",
        "POST",
        "/api/v1/project/org/{org}",
        EVERYONE,
        {"name": "p-{uid}", "templateId": "{tpl}"},
        PROJECTS,
    ),
    Row("get project", "GET", "/api/v1/project/{prj}", EVERYONE),
    Row(
        "update project",
        "PUT",
        "/api/v1/project/{prj}",
        EVERYONE,
        {"name": "renamed-{uid}", "connections": [{"id": "jira", "details": {"type": "jira"}}]},
        PROJECTS,
    ),
    Row("delete project", "DELETE", "/api/v1/project/{prj}", EVERYONE, changes=PROJECTS),
    # Versions are read like their template; moving a project between them is editing the project.
    Row("list template versions", "GET", "/api/v1/template/{tpl}/versions", EVERYONE),
    Row("get template version", "GET", "/api/v1/template/{tpl}/versions/1", EVERYONE),
    Row("upgrade project", "POST", "/api/v1/project/{prj}/upgrade", EVERYONE, {"version": 1}, PROJECTS),
]


MEMBERS_REFUSED = {
    "create template": "only an Owner or Admin may create templates",
    "update template": "only an Owner or Admin may change templates",
    "delete template": "only an Owner or Admin may delete templates",
}


def fill(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**targets)
    if isinstance(value, list):
        return [fill(item, targets) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, targets) for key, item in value.items()}
    return value


async def test_permission_matrix(client, hub, app):
    a = await hub.org("A")
    sides = {"inside": await hub.org("A1", parent=a), "outside": await hub.org("B")}
    callers = {role: await hub.login(a, role) for role in sorted(EVERYONE)}
    mismatches = []
    cases = 0
    for row in ROWS:
        for role, headers in callers.items():
            for side, parent in sides.items():
                uid = uuid.uuid4().hex[:10]
                org = await hub.org(f"target-{uid}", parent=parent)
                template = await hub.template(org)
                targets = {
                    "uid": uid,
                    "org": org,
                    "tpl": template["id"],
                    "free_tpl": (await hub.template(org))["id"],
                    "prj": (await hub.project(org, template["id"]))["id"],
                }
                expected = (200 if role in row.allowed else 403) if side == "inside" else 404
                before = await snapshot(app.state.context.sessions)
                response = await client.request(
                    row.method, fill(row.path, targets), json=fill(row.body, targets), headers=headers
                )
                changed = changed_tables(before, await snapshot(app.state.context.sessions))
                cases += 1
                case = f"{row.name} as {role} ({side})"
                if response.status_code != expected:
                    mismatches.append(f"{case}: expected {expected}, got {response.text}")
                elif expected != 200:
                    metadata = response.json()["metadata"]
                    kind, object_id = row.path.split("/")[3:5]
                    if kind == "org" or object_id == "org":
                        kind, object_id = "organization", org
                    message = (
                        MEMBERS_REFUSED[row.name] if expected == 403 else f"{kind} {fill(object_id, targets)} not found"
                    )
                    if metadata["status"] != expected or metadata["message"] != message:
                        mismatches.append(f"{case}: expected the message {message!r}, got {response.text}")
                    if changed:
                        mismatches.append(f"{case}: refused with {expected}, yet {sorted(changed)} changed")
                elif row.changes is None and changed:
                    mismatches.append(f"{case}: a read changed {sorted(changed)}")
                elif row.changes is not None and row.changes not in changed:
                    mismatches.append(f"{case}: answered 200 but {row.changes} is unchanged")
    assert cases == len(ROWS) * 3 * 2
    assert not mismatches, "\n".join(mismatches)
