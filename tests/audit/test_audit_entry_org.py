"""An entry belongs to the organization of the rows it changed, not to the actor's: an Admin of a parent
organization who changes a child organization's event endpoints, deliveries or bulk replays leaves entries that
the child's Owners read. Every audited table leads to an organization (recorder.ORG_LINKS), or says why not."""

from __future__ import annotations

import uuid

import pytest

from api_helpers import Api
from ihub.audit.models import AuditEntry
from ihub.audit.recorder import ORG_LINKS, UNAUDITED_TABLES

pytestmark = pytest.mark.anyio

# Tables no person changes through an audited channel, so no entry is ever about them.
NO_ORGANIZATION: dict[str, str] = {}  # table -> why its rows belong to no organization

FLOW = {"key": "f", "trigger": "manual", "steps": [{"id": "s", "type": "fail", "message": "x"}]}


async def test_a_parent_admins_changes_land_in_the_child_organization(app, api: Api) -> None:  # noqa: ANN001
    parent = await api.add_org(f"parent-{uuid.uuid4().hex[:6]}", "1")
    child = await api.add_org(f"child-{uuid.uuid4().hex[:6]}", parent)
    parent_admin = await api.headers_for(await api.add_user(parent, "Admin"))
    child_owner = await api.headers_for(await api.add_user(child, "Owner"))
    client = api.client

    template = await client.post(
        "/api/v1/template/org/1",
        json={"name": f"t-{uuid.uuid4().hex[:6]}", "definition": {"connections": [], "flows": [FLOW]}},
        headers=api.auth,
    )
    project = await client.post(
        f"/api/v1/project/org/{child}",
        json={"name": "p", "templateId": template.json()["templates"][0]["id"]},
        headers=api.auth,
    )
    flow_id = project.json()["projects"][0]["flows"][0]["id"]
    run_id = (await client.post(f"/api/v1/flow/{flow_id}/run", json={}, headers=api.auth)).json()["runId"]
    assert (await client.post(f"/api/v1/run/{run_id}/cancel", headers=api.auth)).status_code == 200

    async def act(method: str, url: str, body: object = None) -> dict:
        response = await client.request(method, url, json=body, headers=parent_admin)
        assert response.status_code in (200, 202), (method, url, response.text)
        return response.json()

    created = await act("POST", f"/api/v1/event-endpoint/org/{child}", {"url": "https://hooks.example.com/ihub"})
    endpoint = created["endpoints"][0]["id"]
    await act("PUT", f"/api/v1/event-endpoint/{endpoint}", {"url": "https://attacker.example.com/collect"})
    await act("POST", f"/api/v1/event-endpoint/{endpoint}/rotate-secret")
    delivery = (await act("POST", f"/api/v1/event-endpoint/{endpoint}/test"))["deliveries"][0]["id"]
    await act("POST", f"/api/v1/event-delivery/{delivery}/resend")
    batch = await act("POST", f"/api/v1/org/{child}/replays", {"flow": flow_id, "status": "cancelled", "rate": 1})
    replay = batch["replays"][0]["id"]
    await act("POST", f"/api/v1/replays/{replay}/pause")
    await act("POST", f"/api/v1/replays/{replay}/resume")
    await act("POST", f"/api/v1/replays/{replay}/cancel")
    await act("DELETE", f"/api/v1/event-endpoint/{endpoint}")
    expected = {
        "POST /api/v1/event-endpoint/org/{org_id}",
        "PUT /api/v1/event-endpoint/{endpoint_id}",
        "POST /api/v1/event-endpoint/{endpoint_id}/rotate-secret",
        "POST /api/v1/event-endpoint/{endpoint_id}/test",
        "POST /api/v1/event-delivery/{delivery_id}/resend",
        "POST /api/v1/org/{org_id}/replays",
        "POST /api/v1/replays/{replay_id}/pause",
        "POST /api/v1/replays/{replay_id}/resume",
        "POST /api/v1/replays/{replay_id}/cancel",
        "DELETE /api/v1/event-endpoint/{endpoint_id}",
    }

    # The child's Owner reads who re-pointed, rotated and deleted their endpoint and replayed their runs.
    seen = (await client.get("/api/v1/audit", params={"limit": 200}, headers=child_owner)).json()["entries"]
    by_parent_admin = [e for e in seen if e["action"] in expected]
    assert {e["action"] for e in by_parent_admin} == expected
    assert {e["orgId"] for e in by_parent_admin} == {child}
    exported = await client.get("/api/v1/audit/export", headers=child_owner)
    assert {line for line in exported.text.splitlines() if "attacker.example.com" in line}


def test_every_audited_table_leads_to_an_organization() -> None:
    tables = AuditEntry.metadata.tables
    for name in tables:
        if name in UNAUDITED_TABLES or name == "organizations" or name in NO_ORGANIZATION:
            continue
        assert name in ORG_LINKS, f"{name}: add it to ihub.audit.recorder.ORG_LINKS (or to NO_ORGANIZATION, why)"
    for name, (column, parent) in ORG_LINKS.items():
        foreign = {fk.column.table.name for fk in tables[name].c[column].foreign_keys}
        assert foreign == {parent}, f"{name}.{column} does not refer to {parent}"
