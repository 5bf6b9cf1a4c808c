"""Template versions: every save is an immutable version, a project is pinned to one and moves only when
upgraded (or rolled back), and versions are read like their template."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db_snapshot import NothingWritten

pytestmark = pytest.mark.anyio

PING = {
    "key": "ping",
    "name": "Ping",
    "trigger": {"type": "manual"},
    "steps": [{"id": "p", "type": "delay", "seconds": 0}],
}
PONG = {**PING, "key": "pong", "name": "Pong"}


async def put_definition(hub, template_id: str, **kwargs) -> dict:  # noqa: ANN001
    response = await hub.client.put(
        f"/api/v1/template/{template_id}", json={"definition": hub.definition(**kwargs)}, headers=hub.auth
    )
    assert response.status_code == 200, response.text
    return response.json()["templates"][0]


async def get_project(hub, project_id: str) -> dict:  # noqa: ANN001
    response = await hub.client.get(f"/api/v1/project/{project_id}", headers=hub.auth)
    assert response.status_code == 200, response.text
    return response.json()["projects"][0]


async def test_every_save_is_a_version_and_old_ones_do_not_change(client, hub, owner):
    template = await hub.template(flows=[PING])
    tid = template["id"]
    v1 = (await client.get(f"/api/v1/template/{tid}/versions/1", headers=hub.auth)).json()["versions"][0]
    updated = await put_definition(hub, tid, flows=[PING, PONG])
    assert updated["version"] == 2

    response = await client.get(f"/api/v1/template/{tid}/versions", headers=hub.auth)
    assert response.status_code == 200, response.text
    listing = response.json()
    assert (listing["templateId"], listing["latest"]) == (tid, 2)
    assert [(v["version"], v["flows"], v["createdBy"]) for v in listing["versions"]] == [
        (1, ["ping"], owner.user_id),
        (2, ["ping", "pong"], owner.user_id),
    ]
    assert "definition" not in listing["versions"][0]

    # Version 1 is exactly what it was when saved; version 2 is the template's current definition.
    again = (await client.get(f"/api/v1/template/{tid}/versions/1", headers=hub.auth)).json()["versions"][0]
    assert again == v1 and [f["key"] for f in v1["definition"]["flows"]] == ["ping"]
    v2 = (await client.get(f"/api/v1/template/{tid}/versions/2", headers=hub.auth)).json()["versions"][0]
    assert v2["definition"] == updated["definition"]

    for missing in ("3", "0", "abc"):
        response = await client.get(f"/api/v1/template/{tid}/versions/{missing}", headers=hub.auth)
        assert response.status_code == 404, response.text
    assert (
        "has no version 3"
        in (await client.get(f"/api/v1/template/{tid}/versions/3", headers=hub.auth)).json()["metadata"]["message"]
    )


async def test_versions_are_read_like_their_template(client, hub, app):
    parent = await hub.org()
    child = await hub.org(parent=parent)
    other = await hub.org()
    template = await hub.template(parent)
    tid = template["id"]
    # Inherited: a Member of a child org reads the versions of its ancestor's template.
    member = await hub.login(child, "Member")
    assert (await client.get(f"/api/v1/template/{tid}/versions", headers=member)).status_code == 200
    assert (await client.get(f"/api/v1/template/{tid}/versions/1", headers=member)).status_code == 200
    # Another branch does not learn the template exists.
    outsider = await hub.login(other, "Owner")
    for url in (f"/api/v1/template/{tid}/versions", f"/api/v1/template/{tid}/versions/1"):
        async with NothingWritten(app):
            response = await client.get(url, headers=outsider)
        assert response.status_code == 404
        assert response.json()["metadata"]["message"] == f"template {tid} not found"


async def test_project_is_pinned_and_moves_only_when_upgraded(client, hub):
    org = await hub.org()
    template = await hub.template(flows=[PING])
    project = await hub.project(org, template["id"])
    assert project["templateVersion"] == 1
    url = f"/api/v1/project/{project['id']}"

    # Saving the template leaves the project where it was.
    await put_definition(hub, template["id"], flows=[PONG])
    pinned = await get_project(hub, project["id"])
    assert pinned["templateVersion"] == 1 and [f["key"] for f in pinned["flows"]] == ["ping"]
    # A new project pins the latest.
    assert (await hub.project(org, template["id"]))["templateVersion"] == 2

    # Upgrade (no body: the latest): the flows follow version 2.
    response = await client.post(f"{url}/upgrade", headers=hub.auth)
    assert response.status_code == 200, response.text
    upgraded = response.json()["projects"][0]
    assert upgraded["templateVersion"] == 2 and [f["key"] for f in upgraded["flows"]] == ["pong"]
    # Every field the seed clients read is still there.
    assert set(upgraded) >= set(pinned)

    # Rollback is the same call with a lower version; ping comes back with its old flow id.
    response = await client.post(f"{url}/upgrade", json={"version": 1}, headers=hub.auth)
    assert response.status_code == 200, response.text
    back = response.json()["projects"][0]
    assert back["templateVersion"] == 1 and back["flows"] == pinned["flows"]
    # Form bodies carry strings.
    response = await client.post(f"{url}/upgrade", data={"version": "2"}, headers=hub.auth)
    assert response.status_code == 200 and response.json()["projects"][0]["templateVersion"] == 2


async def test_upgrade_refusals_write_nothing(client, hub, app):
    org = await hub.org()
    other = await hub.org()
    template = await hub.template(flows=[PING])
    project = await hub.project(org, template["id"])
    await put_definition(hub, template["id"], flows=[PONG])
    url = f"/api/v1/project/{project['id']}/upgrade"
    cases = [
        (hub.auth, {"version": 3}, 404, "version_not_found"),
        (hub.auth, {"version": 0}, 400, "validation_error"),
        (hub.auth, {"version": True}, 400, "validation_error"),
        (hub.auth, {"version": "two"}, 400, "validation_error"),
        (hub.auth, [1], 400, "validation_error"),
        # Outside the caller's subtree the project does not exist, whatever the role.
        (await hub.login(other, "Owner"), {"version": 2}, 404, "not_found"),
        (await hub.login(other, "Member"), {}, 404, "not_found"),
    ]
    for headers, body, status, code in cases:
        async with NothingWritten(app):
            response = await client.post(url, json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert response.json()["metadata"]["code"] == code, response.text
    assert (
        "template " + template["id"] + " has no version 3"
        in (await client.post(url, json={"version": 3}, headers=hub.auth)).json()["metadata"]["message"]
    )
    assert (await get_project(hub, project["id"]))["templateVersion"] == 1


async def test_members_upgrade_like_they_edit_projects(client, hub):
    """Same rule as PUT /project (every role manages projects in its subtree, tenancy/permissions.py)."""
    org = await hub.org()
    template = await hub.template(flows=[PING])
    project = await hub.project(org, template["id"])
    await put_definition(hub, template["id"], flows=[PONG])
    member = await hub.login(org, "Member")
    response = await client.post(f"/api/v1/project/{project['id']}/upgrade", json={"version": 2}, headers=member)
    assert response.status_code == 200, response.text
    assert (await get_project(hub, project["id"]))["templateVersion"] == 2


async def test_template_delete_takes_its_versions(client, hub, app):
    from ihub.templates.models import TemplateVersion

    org = await hub.org()
    template = await hub.template(flows=[PING])
    await put_definition(hub, template["id"], flows=[PONG])
    project = await hub.project(org, template["id"])
    # In use: refused, versions intact.
    async with NothingWritten(app):
        response = await client.delete(f"/api/v1/template/{template['id']}", headers=hub.auth)
    assert response.status_code == 409
    assert (await client.delete(f"/api/v1/project/{project['id']}", headers=hub.auth)).status_code == 200
    assert (await client.delete(f"/api/v1/template/{template['id']}", headers=hub.auth)).status_code == 200
    async with app.state.context.sessions() as session:
        left = await session.scalars(select(TemplateVersion).where(TemplateVersion.template_id == int(template["id"])))
        assert left.all() == []
    assert (await client.get(f"/api/v1/template/{template['id']}/versions", headers=hub.auth)).status_code == 404


async def test_racing_saves_get_consecutive_versions(client, hub):
    import asyncio

    template = await hub.template(flows=[PING])
    responses = await asyncio.gather(
        *(
            client.put(f"/api/v1/template/{template['id']}", json={"description": f"save {n}"}, headers=hub.auth)
            for n in range(4)
        )
    )
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert sorted(r.json()["templates"][0]["version"] for r in responses) == [2, 3, 4, 5]
    listing = (await client.get(f"/api/v1/template/{template['id']}/versions", headers=hub.auth)).json()
    assert [v["version"] for v in listing["versions"]] == [1, 2, 3, 4, 5] and listing["latest"] == 5
