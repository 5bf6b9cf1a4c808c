"""Templates over /api/v1: CRUD, inheritance, validation paths, conflicts and role rules (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib

import pytest

from db_snapshot import NothingWritten

pytestmark = pytest.mark.anyio


def message(response) -> str:  # noqa: ANN001
    return response.json()["metadata"]["message"]


async def test_create_get_update_delete(client, hub):
    created = await hub.template(name="ServiceNow to Jira")
    assert set(created) >= {
        "id", "orgId", "name", "description", "version", "definition", "connections", "flows", "createdAt", "updatedAt"
    }  # fmt: skip
    assert created["orgId"] == "1" and created["version"] == 1 and isinstance(created["id"], str)
    assert (created["name"], created["description"]) == ("ServiceNow to Jira", "d")
    assert created["connections"] == [{"id": "jira", "type": "jira", "name": "Jira", "fields": []}]
    flow = created["flows"][0]
    assert (flow["key"], flow["trigger"], flow["mode"]) == ("create-issue", {"type": "jwt"}, "async")
    # The stored definition is the normalized one the flow engine reads.
    assert created["definition"]["connections"] == created["connections"]

    response = await client.get(f"/api/v1/template/{created['id']}", headers=hub.auth)
    assert response.status_code == 200
    assert response.json()["templates"][0]["name"] == "ServiceNow to Jira"

    new_definition = hub.definition(
        slots=[{"id": "jira", "type": "jira", "name": "Jira"}, {"id": "chat", "type": "slack", "name": "Slack"}]
    )
    response = await client.put(
        f"/api/v1/template/{created['id']}",
        json={"name": "SN to Jira", "description": "v2", "definition": new_definition},
        headers=hub.auth,
    )
    assert response.status_code == 200, response.text
    updated = response.json()["templates"][0]
    assert (updated["name"], updated["description"], updated["version"]) == ("SN to Jira", "v2", 2)
    assert [slot["id"] for slot in updated["connections"]] == ["jira", "chat"]

    # Any PUT is a new version, even one that changes only the description.
    response = await client.put(f"/api/v1/template/{created['id']}", json={"description": "v3"}, headers=hub.auth)
    assert response.json()["templates"][0]["version"] == 3

    response = await client.delete(f"/api/v1/template/{created['id']}", headers=hub.auth)
    assert response.status_code == 200
    assert response.json()["templates"][0]["id"] == created["id"]
    response = await client.get(f"/api/v1/template/{created['id']}", headers=hub.auth)
    assert response.status_code == 404
    assert response.json()["metadata"]["code"] == "not_found"


async def test_form_encoded_create_carries_definition_as_json_text(client, hub):
    import json

    response = await client.post(
        "/api/v1/template/org/1",
        data={"name": "from a form", "definition": json.dumps(hub.definition())},
        headers=hub.auth,
    )
    assert response.status_code == 200, response.text
    assert response.json()["templates"][0]["connections"][0]["id"] == "jira"


async def test_inherited_templates_are_listed_and_readable(client, hub):
    parent = await hub.org()
    child = await hub.org(parent=parent)
    grandchild = await hub.org(parent=child)
    sibling = await hub.org(parent=parent)
    root_tpl = await hub.template("1", name="root template")
    parent_tpl = await hub.template(parent, name="parent template")
    child_tpl = await hub.template(child, name="child template")
    await hub.template(sibling, name="sibling template")

    response = await client.get(f"/api/v1/org/{grandchild}/templates", headers=hub.auth)
    assert response.status_code == 200
    # Nearest organization first; siblings' templates are not inherited.
    assert [t["id"] for t in response.json()["templates"]] == [child_tpl["id"], parent_tpl["id"], root_tpl["id"]]

    # A Member of the child org sees the ancestors' templates, which lie outside its subtree...
    member = await hub.login(child, "Member")
    response = await client.get(f"/api/v1/org/{child}/templates", headers=member)
    assert [t["name"] for t in response.json()["templates"]] == ["child template", "parent template", "root template"]
    for template in (root_tpl, parent_tpl, child_tpl):
        assert (await client.get(f"/api/v1/template/{template['id']}", headers=member)).status_code == 200
    # ...but not a sibling branch, nor the ancestor org's own listing.
    response = await client.get(f"/api/v1/org/{sibling}/templates", headers=member)
    assert response.status_code == 404
    response = await client.get(f"/api/v1/org/{parent}/templates", headers=member)
    assert response.status_code == 404


async def test_inherited_templates_are_read_only_below(client, hub, app):
    child = await hub.org()
    root_tpl = await hub.template("1")
    owner_below = await hub.login(child, "Owner")
    async with NothingWritten(app):
        response = await client.put(
            f"/api/v1/template/{root_tpl['id']}", json={"description": "x"}, headers=owner_below
        )
        assert response.status_code == 403
        assert "read-only" in message(response)
        response = await client.delete(f"/api/v1/template/{root_tpl['id']}", headers=owner_below)
        assert response.status_code == 403
    # The owner below may create templates in their own org, and names are per org.
    response = await client.post(
        f"/api/v1/template/org/{child}",
        json={"name": root_tpl["name"], "definition": hub.definition()},
        headers=owner_below,
    )
    assert response.status_code == 200, response.text


async def test_outside_subtree_is_404(client, hub, app):
    org_a = await hub.org()
    org_b = await hub.org()
    tpl_b = await hub.template(org_b)
    admin_a = await hub.login(org_a, "Admin")
    for method, url, body in [
        ("GET", f"/api/v1/template/{tpl_b['id']}", None),
        ("PUT", f"/api/v1/template/{tpl_b['id']}", {"description": "x"}),
        ("DELETE", f"/api/v1/template/{tpl_b['id']}", None),
        ("GET", f"/api/v1/org/{org_b}/templates", None),
        ("POST", f"/api/v1/template/org/{org_b}", {"name": "x", "definition": hub.definition()}),
        ("GET", "/api/v1/template/999999", None),
        ("GET", "/api/v1/template/not-a-number", None),
    ]:
        async with NothingWritten(app):
            response = await client.request(method, url, json=body, headers=admin_a)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["metadata"]["status"] == 404


@pytest.mark.parametrize("role,allowed", [("Owner", True), ("Admin", True), ("Member", False)])
async def test_roles_writing_templates(client, hub, app, role, allowed):
    org = await hub.org()
    existing = await hub.template(org)
    caller = await hub.login(org, role)

    async def templates_in_org() -> dict[str, str]:
        response = await client.get(f"/api/v1/org/{org}/templates", headers=hub.auth)
        return {t["name"]: t["description"] for t in response.json()["templates"] if t["orgId"] == org}

    before = await templates_in_org()
    async with NothingWritten(app) if not allowed else contextlib.nullcontext():
        responses = [
            await client.post(
                f"/api/v1/template/org/{org}", json={"name": "mine", "definition": hub.definition()}, headers=caller
            ),
            await client.put(f"/api/v1/template/{existing['id']}", json={"description": "changed"}, headers=caller),
        ]
        after_update = await templates_in_org()
        responses.append(await client.delete(f"/api/v1/template/{existing['id']}", headers=caller))
    for response in responses:
        assert response.status_code == (200 if allowed else 403), response.text
        if not allowed:
            assert response.json()["metadata"]["code"] == "forbidden"
            assert "Owner or Admin" in response.json()["metadata"]["message"]
    # The effect, read back as the root Owner: created, changed, deleted; or nothing at all.
    if allowed:
        assert after_update == {**before, "mine": "", existing["name"]: "changed"}
        assert await templates_in_org() == {"mine": ""}
    else:
        assert after_update == before == await templates_in_org()
    # Everyone may read.
    response = await client.get(f"/api/v1/org/{org}/templates", headers=caller)
    assert response.status_code == 200


async def test_no_token_is_401(client, hub):
    template = await hub.template()
    for method, url in [("GET", f"/api/v1/template/{template['id']}"), ("GET", "/api/v1/org/1/templates")]:
        response = await client.request(method, url)
        assert response.status_code == 401
    response = await client.post("/api/v1/template/org/1", json={"name": "x", "definition": hub.definition()})
    assert response.status_code == 401
    response = await client.get("/api/v1/org/1/templates", headers={"Authorization": "not-a-token"})
    assert response.status_code == 401


async def test_duplicate_names_conflict_per_org(client, hub):
    org = await hub.org()
    first = await hub.template(org, name="same")
    response = await client.post(
        f"/api/v1/template/org/{org}", json={"name": "same", "definition": hub.definition()}, headers=hub.auth
    )
    assert response.status_code == 409
    assert response.json()["metadata"]["code"] == "name_taken"
    other = await hub.template(org, name="other")
    response = await client.put(f"/api/v1/template/{other['id']}", json={"name": "same"}, headers=hub.auth)
    assert response.status_code == 409
    # Renaming to its own name is not a conflict.
    response = await client.put(f"/api/v1/template/{first['id']}", json={"name": "same"}, headers=hub.auth)
    assert response.status_code == 200


async def test_template_in_use_cannot_be_deleted(client, hub):
    org = await hub.org()
    template = await hub.template("1")
    project = await hub.project(org, template["id"])
    response = await client.delete(f"/api/v1/template/{template['id']}", headers=hub.auth)
    assert response.status_code == 409
    assert response.json()["metadata"]["code"] == "template_in_use"
    assert response.json()["metadata"]["message"] == (
        f"template {template['id']} is used by 1 project(s); delete or move them first"
    )
    assert (await client.delete(f"/api/v1/project/{project['id']}", headers=hub.auth)).status_code == 200
    assert (await client.delete(f"/api/v1/template/{template['id']}", headers=hub.auth)).status_code == 200


BAD_DEFINITIONS = [
    ([], "definition: must be an object"),
    ({"connections": {}}, "definition.connections: must be a list"),
    ({"flows": [], "extra": 1}, "definition.extra: unknown key"),
    (
        {"connections": [{"id": "a", "type": "jira"}, {"id": "b", "type": "foo"}]},
        "definition.connections[1].type: unknown connection type 'foo'",
    ),
    ({"connections": [{"id": "a"}]}, "definition.connections[0].type: required"),
    ({"connections": [{"id": "bad id!", "type": "http"}]}, "definition.connections[0].id: must match"),
    ({"connections": [{"id": "x" * 101, "type": "http"}]}, "definition.connections[0].id: must match"),
    (
        {"connections": [{"id": "a", "type": "http"}, {"id": "a", "type": "jira"}]},
        "definition.connections[1].id: duplicate connection slot id 'a'",
    ),
    (
        {"connections": [{"id": "a", "type": "jira", "fields": ["siteUrl", "password"]}]},
        "definition.connections[0].fields[1]: 'password' is not a field of type 'jira'",
    ),
    ({"connections": [{"id": "a", "type": "jira", "colour": "red"}]}, "definition.connections[0].colour: unknown key"),
    ({"connections": [{"id": "a", "type": "jira", "name": ""}]}, "definition.connections[0].name:"),
    # Flows are checked by the flow engine's validator, with the same kind of paths.
    ({"connections": [], "flows": [{"key": "k", "trigger": {"type": "jwt"}, "steps": [
        {"id": "s", "type": "http", "connection": "nope", "path": "/"}]}]},
     "definition.flows[0].steps[0].connection"),
    ({"flows": [{"key": "k", "trigger": {"type": "webhook"}, "steps": []}]}, "definition.flows[0].trigger.type"),
]  # fmt: skip


@pytest.mark.parametrize("bad,expected", BAD_DEFINITIONS)
async def test_definition_errors_name_the_json_path(client, hub, bad, expected):
    response = await client.post("/api/v1/template/org/1", json={"name": "bad", "definition": bad}, headers=hub.auth)
    assert response.status_code == 400, response.text
    assert message(response).startswith(expected), message(response)
    # An update is validated the same way and changes nothing when refused.
    template = await hub.template()
    response = await client.put(f"/api/v1/template/{template['id']}", json={"definition": bad}, headers=hub.auth)
    assert response.status_code == 400
    response = await client.get(f"/api/v1/template/{template['id']}", headers=hub.auth)
    assert response.json()["templates"][0]["version"] == 1


async def test_body_errors(client, hub):
    response = await client.post("/api/v1/template/org/1", json={"definition": hub.definition()}, headers=hub.auth)
    assert response.status_code == 400
    assert "name" in message(response)
    response = await client.post("/api/v1/template/org/1", json={"name": "x"}, headers=hub.auth)
    assert response.status_code == 400
    assert "definition" in message(response)
    response = await client.post(
        "/api/v1/template/org/1", data={"name": "x", "definition": "{not json"}, headers=hub.auth
    )
    assert response.status_code == 400
    assert "definition" in message(response)
