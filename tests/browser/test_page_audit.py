"""Every console page, as a browser sees it: no script or style blocked by the Content-Security-Policy, no
JavaScript error, one `<h1>`, a label on every field, and every control reachable by keyboard."""

from __future__ import annotations

from typing import Any

import httpx
from browser_kit import api_auth, api_project, owner_page, shot

# A template with a connection slot and a flow that needs no other system, so every page has content.
DEFINITION = {
    "connections": [{"id": "jira", "type": "jira", "name": "Jira Cloud"}],
    "flows": [
        {
            "key": "echo",
            "name": "Echo",
            "trigger": {"type": "jwt"},
            "steps": [{"id": "reply", "type": "respond", "status": 200, "body": {"ok": True}}],
        }
    ],
}


def pages_of(hub: Any) -> list[str]:
    """Every console page a signed-in Owner reaches, with a template, a project and one run in the hub."""
    project = api_project(hub, DEFINITION)
    flow_id = project["flows"][0]["id"]
    response = httpx.post(f"{hub.url}/api/v1/flow/{flow_id}/run", json={"hello": "audit"}, headers=api_auth(hub))
    assert response.status_code in (200, 201, 202), response.text
    run_id = response.json()["runId"]
    return [
        "/console/org/1/projects",
        "/console/org/1/projects/new",
        f"/console/project/{project['id']}",
        f"/console/project/{project['id']}/setup",
        f"/console/project/{project['id']}/runs",
        "/console/org/1/templates",
        "/console/org/1/templates/new",
        f"/console/template/{project['templateId']}",
        f"/console/template/{project['templateId']}/edit",
        f"/console/flow/{flow_id}/trigger",
        "/console/org/1/runs",
        "/console/org/1/runs?status=succeeded",
        f"/console/run/{run_id}",
        "/console/org/1/users",
        "/console/org/1/users?user=1",
        "/console/org/1/orgs",
        "/console/org/1/events",
        "/console/account",
        "/console/system",
    ]


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden' && !el.hidden)
  .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML)"""

UNREACHABLE = """() => [...document.querySelectorAll('a[href], button, input, select, textarea, summary')]
  .filter(el => el.type !== 'hidden' && !el.hidden && !el.disabled && el.tabIndex < 0)
  .map(el => el.outerHTML)"""


def test_every_page_passes_the_audit(page: Any, hub: Any) -> None:
    owner_page(page, hub)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    for path in pages_of(hub):
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        assert page.locator("h1").count() == 1, path
        assert page.evaluate(UNLABELLED) == [], path
        assert page.evaluate(UNREACHABLE) == [], path
        shot(page, "audit-" + path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-"))
    assert problems == []


def test_the_focused_control_is_visibly_marked(page: Any, hub: Any) -> None:
    owner_page(page, hub)
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    shadow = page.evaluate("getComputedStyle(document.activeElement).boxShadow")
    assert shadow and shadow != "none"
