"""Projects over /api/v1: create from a template, connections, flows, following template changes, roles."""

from __future__ import annotations

import pytest

from db_snapshot import NothingWritten

pytestmark = pytest.mark.anyio

SLOTS = [
    {"id": "jira", "type": "jira", "name": "Jira Cloud"},
    {"id": "api", "type": "http", "name": "Some API", "fields": ["scope"]},
]
PING_FLOW = {
    "key": "ping",
    "name": "Ping",
    "trigger": {"type": "manual"},
    "steps": [{"id": "p", "type": "delay", "seconds": 0}],
}


def message(response) -> str:  # noqa: ANN001
    return response.json()["metadata"]["message"]


def connection(project: dict, slot_id: str) -> dict:
    return next(c for c in project["connections"] if c["id"] == slot_id)


async def test_create_project_from_template(client, hub):
    org = await hub.org()
    template = await hub.template("1", slots=SLOTS, flows=[hub.jira_flow, PING_FLOW])
    project = await hub.project(org, template["id"], name="Best Project Ever")
    assert (project["name"], project["description"], project["orgId"], project["templateId"]) == (
        "Best Project Ever", "p", org, template["id"]
    )  # fmt: skip
    assert project["templateConnections"] == [
        {"id": "jira", "type": "jira", "name": "Jira Cloud", "fields": []},
        {"id": "api", "type": "http", "name": "Some API", "fields": ["scope"]},
    ]
    assert connection(project, "jira") == {
        "id": "jira", "type": "jira", "name": "Jira Cloud", "configured": False, "config": {}, "secretsSet": [],
        "missing": ["siteUrl", "email", "apiToken"],
        "status": "connected", "statusMessage": None, "lastRefreshedAt": None, "lastUsedAt": None,
    }  # fmt: skip
    assert connection(project, "api")["missing"] == ["baseUrl", "scope"]
    flows = project["flows"]
    assert [(f["key"], f["name"], f["trigger"], f["mode"]) for f in flows] == [
        ("create-issue", "Create a Jira issue", {"type": "jwt"}, "async"),
        ("ping", "Ping", {"type": "manual"}, "async"),
    ]
    assert all(f["id"].isdigit() for f in flows) and flows[0]["id"] != flows[1]["id"]

    response = await client.get(f"/api/v1/project/{project['id']}", headers=hub.auth)
    assert response.status_code == 200
    assert response.json()["projects"][0] == project
    response = await client.get(f"/api/v1/project/org/{org}", headers=hub.auth)
    assert [p["id"] for p in response.json()["projects"]] == [project["id"]]


async def test_template_must_be_visible_from_the_org(client, hub):
    parent = await hub.org()
    child = await hub.org(parent=parent)
    other = await hub.org()
    parent_tpl = await hub.template(parent)
    child_tpl = await hub.template(child)
    other_tpl = await hub.template(other)
    # An ancestor's template is usable below it.
    await hub.project(child, parent_tpl["id"])
    # A descendant's or another branch's template is not usable here.
    for template in (child_tpl, other_tpl):
        response = await client.post(
            f"/api/v1/project/org/{parent}", json={"name": "x", "templateId": template["id"]}, headers=hub.auth
        )
        assert response.status_code == 400
        assert response.json()["metadata"]["code"] == "template_not_available"
    response = await client.post(
        f"/api/v1/project/org/{parent}", json={"name": "x", "templateId": "987654"}, headers=hub.auth
    )
    assert response.status_code == 404
    # A caller who cannot see the template at all learns nothing about it.
    member = await hub.login(parent, "Member")
    response = await client.post(
        f"/api/v1/project/org/{parent}", json={"name": "x", "templateId": other_tpl["id"]}, headers=member
    )
    assert response.status_code == 404


async def test_put_connections_as_the_seed_sample_sends_them(client, hub):
    org = await hub.org()
    template = await hub.template("1", slots=SLOTS)
    project = await hub.project(org, template["id"])
    body = {"connections": [{"id": c["id"], "details": {"type": c["type"]}} for c in project["templateConnections"]]}
    response = await client.put(f"/api/v1/project/{project['id']}", json=body, headers=hub.auth)
    assert response.status_code == 200, response.text
    updated = response.json()["projects"][0]
    assert [c["configured"] for c in updated["connections"]] == [False, False]
    assert connection(updated, "jira")["missing"] == ["siteUrl", "email", "apiToken"]


async def test_configure_update_and_clear_fields(client, hub):
    org = await hub.org()
    template = await hub.template("1", slots=SLOTS)
    project = await hub.project(org, template["id"])
    url = f"/api/v1/project/{project['id']}"
    jira = {"type": "jira", "siteUrl": "https://acme.atlassian.net", "email": "bot@acme.com", "apiToken": "tok-1"}
    response = await client.put(url, json={"connections": [{"id": "jira", "details": jira}]}, headers=hub.auth)
    assert response.status_code == 200, response.text
    state = connection(response.json()["projects"][0], "jira")
    assert state == {
        "id": "jira", "type": "jira", "name": "Jira Cloud", "configured": True,
        "config": {"siteUrl": "https://acme.atlassian.net", "email": "bot@acme.com"}, "secretsSet": ["apiToken"],
        "missing": [],
        "status": "connected", "statusMessage": None, "lastRefreshedAt": None, "lastUsedAt": None,
    }  # fmt: skip
    assert "tok-1" not in response.text

    # Fields directly on the entry; fields not mentioned (the token) are kept.
    response = await client.put(
        url, json={"connections": [{"id": "jira", "type": "jira", "email": "other@acme.com"}]}, headers=hub.auth
    )
    state = connection(response.json()["projects"][0], "jira")
    assert state["config"]["email"] == "other@acme.com" and state["secretsSet"] == ["apiToken"] and state["configured"]

    # null clears a field, secret or not.
    response = await client.put(
        url, json={"connections": [{"id": "jira", "details": {"apiToken": None, "siteUrl": None}}]}, headers=hub.auth
    )
    state = connection(response.json()["projects"][0], "jira")
    assert state["secretsSet"] == [] and "siteUrl" not in state["config"]
    assert (state["configured"], state["missing"]) == (False, ["siteUrl", "apiToken"])

    # The http slot: auth choice makes more fields required; the slot's extra field too.
    api = {"baseUrl": "https://api.example", "authType": "bearer", "headers": {"X-Tenant": "7"}}
    response = await client.put(url, json={"connections": [{"id": "api", "details": api}]}, headers=hub.auth)
    state = connection(response.json()["projects"][0], "api")
    assert state["missing"] == ["token", "scope"] and not state["configured"]
    response = await client.put(
        url, json={"connections": [{"id": "api", "token": "b-1", "scope": "read"}]}, headers=hub.auth
    )
    state = connection(response.json()["projects"][0], "api")
    assert state["configured"] and state["secretsSet"] == ["token"]
    assert state["config"] == {**api, "scope": "read"}


@pytest.mark.parametrize(
    "entries,expected",
    [
        ([{"id": "nope", "details": {"type": "jira"}}], "connections[0].id: project "),
        ([{"id": "jira", "details": {"type": "jira"}}, {"id": "api", "details": {"type": "jira"}}],
         "connections[1].details.type: connection 'api' has type 'http' in the template, not 'jira'"),
        ([{"id": "jira", "type": "slack"}], "connections[0].type: connection 'jira' has type 'jira'"),
        ([{"details": {"type": "jira"}}], "connections[0].id: required"),
        (["jira"], "connections[0]: must be an object"),
        ([{"id": "jira", "details": "jira"}], "connections[0].details: must be an object"),
        ([{"id": "jira", "details": {"siteUrl": "not a url"}}], "connections[0].details.siteUrl: must be an http"),
        ([{"id": "jira", "password": "x"}], "connections[0].password: unknown field for connection type 'jira'"),
        ([{"id": "jira"}, {"id": "jira"}], "connections[1].id: connection 'jira' appears twice"),
    ],
)  # fmt: skip
async def test_bad_connection_entries_name_the_index(client, hub, entries, expected):
    org = await hub.org()
    template = await hub.template("1", slots=SLOTS)
    project = await hub.project(org, template["id"])
    # A valid first change in the same request must not be applied when a later entry is refused.
    response = await client.put(
        f"/api/v1/project/{project['id']}", json={"name": "renamed", "connections": entries}, headers=hub.auth
    )
    assert response.status_code == 400, response.text
    assert message(response).startswith(expected), message(response)
    response = await client.get(f"/api/v1/project/{project['id']}", headers=hub.auth)
    assert response.json()["projects"][0]["name"] == project["name"]


async def test_settings_name_description(client, hub):
    org = await hub.org()
    template = await hub.template("1")
    project = await hub.project(org, template["id"])
    response = await client.put(
        f"/api/v1/project/{project['id']}",
        json={"name": "New name", "description": "new", "settings": {"jiraProject": "OPS", "limit": 3}},
        headers=hub.auth,
    )
    assert response.status_code == 200
    updated = response.json()["projects"][0]
    assert (updated["name"], updated["description"], updated["settings"]) == (
        "New name", "new", {"jiraProject": "OPS", "limit": 3}
    )  # fmt: skip
    response = await client.put(f"/api/v1/project/{project['id']}", json={"settings": [1]}, headers=hub.auth)
    assert response.status_code == 400


async def test_duplicate_project_names_conflict(client, hub):
    org = await hub.org()
    template = await hub.template("1")
    await hub.project(org, template["id"], name="same")
    response = await client.post(
        f"/api/v1/project/org/{org}", json={"name": "same", "templateId": template["id"]}, headers=hub.auth
    )
    assert response.status_code == 409
    other = await hub.project(org, template["id"], name="other")
    response = await client.put(f"/api/v1/project/{other['id']}", json={"name": "same"}, headers=hub.auth)
    assert response.status_code == 409
    # Another org may use the name.
    await hub.project(await hub.org(), template["id"], name="same")


async def test_delete_project(client, hub):
    org = await hub.org()
    template = await hub.template("1")
    project = await hub.project(org, template["id"])
    response = await client.delete(f"/api/v1/project/{project['id']}", headers=hub.auth)
    assert response.status_code == 200
    assert response.json()["projects"][0]["id"] == project["id"]
    assert (await client.get(f"/api/v1/project/{project['id']}", headers=hub.auth)).status_code == 404
    assert (await client.delete(f"/api/v1/project/{project['id']}", headers=hub.auth)).status_code == 404


@pytest.mark.parametrize("role", ["Owner", "Admin", "Member"])
async def test_every_role_manages_projects_in_its_subtree(client, hub, role):
    org = await hub.org()
    below = await hub.org(parent=org)
    template = await hub.template("1")
    caller = await hub.login(org, role)
    response = await client.post(
        f"/api/v1/project/org/{below}", json={"name": "mine", "templateId": template["id"]}, headers=caller
    )
    assert response.status_code == 200, response.text
    project_id = response.json()["projects"][0]["id"]
    url = f"/api/v1/project/{project_id}"
    response = await client.put(
        url, json={"connections": [{"id": "jira", "details": {"type": "jira"}}]}, headers=caller
    )
    assert response.status_code == 200
    # The effect, read back as the root Owner.
    seen = (await client.get(url, headers=hub.auth)).json()["projects"][0]
    assert seen["name"] == "mine" and seen["orgId"] == below
    assert [c["id"] for c in seen["connections"]] == ["jira"]
    assert (await client.get(f"/api/v1/project/org/{below}", headers=caller)).status_code == 200
    assert (await client.get(url, headers=caller)).status_code == 200
    assert (await client.delete(url, headers=caller)).status_code == 200
    assert (await client.get(url, headers=hub.auth)).status_code == 404


async def test_outside_subtree_is_404_and_no_token_is_401(client, hub, app):
    org_a = await hub.org()
    org_b = await hub.org()
    template = await hub.template("1")
    project_b = await hub.project(org_b, template["id"])
    caller = await hub.login(org_a, "Owner")
    url = f"/api/v1/project/{project_b['id']}"
    for method, target, body in [
        ("GET", url, None),
        ("PUT", url, {"name": "x"}),
        ("DELETE", url, None),
        ("GET", f"/api/v1/project/org/{org_b}", None),
        ("POST", f"/api/v1/project/org/{org_b}", {"name": "x", "templateId": template["id"]}),
        ("GET", "/api/v1/project/0", None),
        ("GET", "/api/v1/project/abc", None),
    ]:
        async with NothingWritten(app):
            response = await client.request(method, target, json=body, headers=caller)
            assert response.status_code == 404, (method, target, response.text)
            response = await client.request(method, target, json=body)
            assert response.status_code == 401, (method, target, response.text)
    # Nothing changed.
    response = await client.get(url, headers=hub.auth)
    assert response.json()["projects"][0]["name"] == project_b["name"]


async def test_upgrade_syncs_flows_and_connections(client, hub):
    org = await hub.org()
    template = await hub.template("1", slots=SLOTS[:1], flows=[hub.jira_flow, PING_FLOW])
    project = await hub.project(org, template["id"])
    ids = {f["key"]: f["id"] for f in project["flows"]}
    url = f"/api/v1/project/{project['id']}"
    jira = {"siteUrl": "https://acme.atlassian.net", "email": "bot@acme.com", "apiToken": "tok"}
    await client.put(url, json={"connections": [{"id": "jira", "details": jira}]}, headers=hub.auth)

    async def put_template(slots, flows):  # noqa: ANN001, ANN202
        response = await client.put(
            f"/api/v1/template/{template['id']}",
            json={"definition": hub.definition(slots=slots, flows=flows)},
            headers=hub.auth,
        )
        assert response.status_code == 200, response.text
        # Saving the template moves no project: it stays pinned until upgraded.
        before = (await client.get(url, headers=hub.auth)).json()["projects"][0]
        assert before["templateVersion"] == response.json()["templates"][0]["version"] - 1
        response = await client.post(f"{url}/upgrade", json={}, headers=hub.auth)
        assert response.status_code == 200, response.text
        assert response.json()["projects"][0] == (await client.get(url, headers=hub.auth)).json()["projects"][0]
        return response.json()["projects"][0]

    renamed_ping = {**PING_FLOW, "name": "Ping v2"}
    pong = {**PING_FLOW, "key": "pong", "name": "Pong"}
    # Drop "ping", add "pong" and a new slot: the jira connection keeps its configuration.
    project = await put_template(SLOTS, [hub.jira_flow, pong])
    assert [f["key"] for f in project["flows"]] == ["create-issue", "pong"]
    assert project["flows"][0]["id"] == ids["create-issue"]
    assert connection(project, "jira")["configured"] is True
    assert connection(project, "api")["configured"] is False
    assert project["templateVersion"] == 2
    # Re-adding "ping" brings back the same flow id (its run history and trigger keys stay valid).
    project = await put_template(SLOTS, [hub.jira_flow, pong, renamed_ping])
    flows = {f["key"]: f for f in project["flows"]}
    assert flows["ping"]["id"] == ids["ping"] and flows["ping"]["name"] == "Ping v2"
    # A slot whose type changes starts over: old values mean nothing for the new type.
    project = await put_template([{"id": "jira", "type": "http", "name": "Now plain"}], [pong])
    state = connection(project, "jira")
    assert (state["type"], state["configured"], state["config"], state["secretsSet"]) == ("http", False, {}, [])
    assert [f["key"] for f in project["flows"]] == ["pong"]


async def test_form_encoded_project_create_and_update(client, hub):
    org = await hub.org()
    template = await hub.template("1")
    response = await client.post(
        f"/api/v1/project/org/{org}", data={"name": "form", "templateId": template["id"]}, headers=hub.auth
    )
    assert response.status_code == 200, response.text
    project_id = response.json()["projects"][0]["id"]
    response = await client.put(
        f"/api/v1/project/{project_id}",
        data={"description": "via form", "connections": '[{"id": "jira", "details": {"type": "jira"}}]'},
        headers=hub.auth,
    )
    assert response.status_code == 200, response.text
    assert response.json()["projects"][0]["description"] == "via form"


async def test_connection_types_endpoint(client, hub):
    response = await client.get("/api/v1/connection/types", headers=hub.auth)
    assert response.status_code == 200
    types = {t["type"]: t for t in response.json()["connectionTypes"]}
    assert sorted(types) == [
        "google_oauth", "http", "jira", "jira_cloud_oauth", "microsoft365_oauth", "oauth2_authorization_code",
        "salesforce_oauth", "servicenow", "slack", "slack_oauth",
    ]  # fmt: skip
    assert [f["name"] for f in types["jira"]["fields"] if f["secret"]] == ["apiToken"]
    assert (await client.get("/api/v1/connection/types")).status_code == 401
