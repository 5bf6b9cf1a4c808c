"""Free-form JSON a client stores (project settings, connection details, template definitions) is bounded in
depth and size before anything is written: a deep value must never make the project unreadable, and a refused
request leaves everything as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ihub.common.jsonbounds import MAX_JSON_BYTES, MAX_JSON_DEPTH, json_depth

pytestmark = pytest.mark.anyio


def nested(depth: int) -> dict[str, Any]:
    """`{"a": {"a": ... {}}}`, `depth` objects deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_nested_builds_what_it_says() -> None:
    assert json_depth(nested(1), 100) == 1
    assert json_depth(nested(33), 100) == 33
    assert json_depth({"a": [1, [2, {"b": []}]]}, 100) == 5
    assert json_depth("scalar", 100) == 0
    assert json_depth(nested(500), 40) == 41  # stops counting past the bound


async def readable(client, hub, project: dict[str, Any]) -> tuple[dict, list]:  # noqa: ANN001
    one = await client.get(f"/api/v1/project/{project['id']}", headers=hub.auth)
    assert one.status_code == 200, one.text
    listed = await client.get(f"/api/v1/project/org/{project['orgId']}", headers=hub.auth)
    assert listed.status_code == 200, listed.text
    return one.json()["projects"][0], listed.json()["projects"]


async def test_deep_settings_are_refused_and_the_project_still_reads(client, hub):
    org = await hub.org()
    template = await hub.template()
    project = await hub.project(org, template["id"])
    ok = await client.put(
        f"/api/v1/project/{project['id']}", json={"settings": {"keep": nested(MAX_JSON_DEPTH - 1)}}, headers=hub.auth
    )
    assert ok.status_code == 200, ok.text
    before = await readable(client, hub, project)

    for body in (
        {"settings": nested(400)},
        {"settings": {"keep": nested(MAX_JSON_DEPTH)}},
        {"name": "renamed", "settings": nested(MAX_JSON_DEPTH + 1)},
    ):
        response = await client.put(f"/api/v1/project/{project['id']}", json=body, headers=hub.auth)
        assert response.status_code == 400, response.text
        assert "settings" in response.json()["metadata"]["message"]
        assert f"deeper than {MAX_JSON_DEPTH}" in response.json()["metadata"]["message"]
    # Form-encoded bodies carry settings as JSON text: bounded the same way.
    form = {"settings": json.dumps(nested(100))}
    response = await client.put(f"/api/v1/project/{project['id']}", data=form, headers=hub.auth)
    assert response.status_code == 400, response.text

    assert await readable(client, hub, project) == before


async def test_large_settings_are_refused(client, hub):
    org = await hub.org()
    project = await hub.project(org, (await hub.template())["id"])
    before = await readable(client, hub, project)
    large = {"blob": "x" * MAX_JSON_BYTES}
    response = await client.put(f"/api/v1/project/{project['id']}", json={"settings": large}, headers=hub.auth)
    assert response.status_code == 400, response.text
    assert "KiB" in response.json()["metadata"]["message"]
    assert await readable(client, hub, project) == before


async def test_a_project_created_with_deep_settings_is_not_created(client, hub):
    org = await hub.org()
    template = await hub.template()
    body = {"name": "deep", "templateId": template["id"], "settings": nested(200)}
    response = await client.post(f"/api/v1/project/org/{org}", json=body, headers=hub.auth)
    assert response.status_code == 400, response.text
    listed = await client.get(f"/api/v1/project/org/{org}", headers=hub.auth)
    assert listed.status_code == 200
    assert listed.json()["projects"] == []


async def test_deep_connection_details_are_refused(client, hub):
    org = await hub.org()
    project = await hub.project(org, (await hub.template())["id"])
    before = await readable(client, hub, project)
    deep = [{"id": "jira", "details": {"type": "jira", "siteUrl": nested(100)}}]
    response = await client.put(f"/api/v1/project/{project['id']}", json={"connections": deep}, headers=hub.auth)
    assert response.status_code == 400, response.text
    assert await readable(client, hub, project) == before


async def test_a_refused_update_writes_nothing(client, hub):
    """Settings and name are valid, a connection is not: the request fails as a whole."""
    org = await hub.org()
    project = await hub.project(org, (await hub.template())["id"])
    before = await readable(client, hub, project)
    body = {"name": "renamed", "settings": {"a": 1}, "connections": [{"id": "nope", "details": {"type": "jira"}}]}
    response = await client.put(f"/api/v1/project/{project['id']}", json=body, headers=hub.auth)
    assert response.status_code in (400, 404), response.text
    assert await readable(client, hub, project) == before


async def test_deep_template_definitions_are_refused(client, hub):
    flow = {**hub.jira_flow, "steps": [{"id": "m", "type": "map", "set": {"deep": nested(200)}}]}
    body = {"name": "deep-template", "description": "", "definition": hub.definition(flows=[flow])}
    response = await client.post("/api/v1/template/org/1", json=body, headers=hub.auth)
    assert response.status_code == 400, response.text
    assert "deeper than" in response.json()["metadata"]["message"]
    listed = await client.get("/api/v1/org/1/templates", headers=hub.auth)
    assert listed.status_code == 200, listed.text
    assert "deep-template" not in [t["name"] for t in listed.json()["templates"]]
