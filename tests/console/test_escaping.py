"""Whatever a tenant types (org, user, template, project and flow names, run payloads) reaches other people's
pages as text, never as markup."""

from __future__ import annotations

from typing import Any

import pytest
from console_kit import Browser

pytestmark = pytest.mark.anyio

MARKUP = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
ESCAPED = "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"


async def test_names_and_payloads_are_escaped_on_every_page(owner_browser: Browser, api: Any) -> None:
    org_id = await api.add_org(MARKUP, "1")
    response = await api.client.post(
        f"/api/v1/user/org/{org_id}",
        json=[{"name": MARKUP, "email": "x@example.com", "role": "Member"}],
        headers=api.auth,
    )
    assert response.status_code == 200, response.text
    user_id = response.json()["users"][0]["id"]
    flow = {
        "key": "echo",
        "name": MARKUP,
        "trigger": {"type": "jwt"},
        "steps": [{"id": "reply", "type": "respond", "status": 200, "body": {"said": "{{ trigger.body.text }}"}}],
    }
    body = {"name": MARKUP, "description": MARKUP, "definition": {"connections": [], "flows": [flow]}}
    response = await api.client.post(f"/api/v1/template/org/{org_id}", json=body, headers=api.auth)
    assert response.status_code == 200, response.text
    template_id = response.json()["templates"][0]["id"]
    body = {"name": MARKUP, "description": MARKUP, "templateId": template_id}
    response = await api.client.post(f"/api/v1/project/org/{org_id}", json=body, headers=api.auth)
    assert response.status_code == 200, response.text
    project = response.json()["projects"][0]
    flow_id = project["flows"][0]["id"]
    response = await api.client.post(f"/api/v1/flow/{flow_id}/run", json={"text": MARKUP}, headers=api.auth)
    assert response.status_code in (200, 201, 202), response.text
    run_id = response.json()["runId"]

    pages = [
        f"/console/org/{org_id}/users?user={user_id}",
        f"/console/org/{org_id}/orgs",
        f"/console/org/{org_id}/templates",
        f"/console/template/{template_id}",
        f"/console/org/{org_id}/projects",
        f"/console/project/{project['id']}",
        f"/console/flow/{flow_id}/trigger",
        f"/console/org/{org_id}/runs",
        f"/console/run/{run_id}",
    ]
    for path in pages:
        html = (await owner_browser.page(path)).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html or ESCAPED in html, path
