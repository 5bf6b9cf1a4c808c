"""The seed's JavaScript provisioning sample, step by step, against a live `ihub serve` with `requests`.

Like the sample: JSON bodies, a bare token in the `authorization` header, `id` (not `userId`) in the
token request, the token read from `body["token"][0]["token"]`, the org created with the default parent,
connections PUT back in the `{id, details: {type}}` shape built from `templateConnections`.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import requests

pytestmark = pytest.mark.slow


def test_javascript_sample_sequence(live_hub):
    api = live_hub.url + "/api/v1/"
    headers = {"authorization": None, "content-type": "application/json"}

    def send(method: str, url: str, body: object) -> dict:
        response = requests.request(method, url, headers=headers, data=json.dumps(body), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    # AUTHORIZATION STEP
    nonce = str(uuid.uuid1())
    credentials = {
        "id": live_hub.user_id,
        "nonce": nonce,
        "hash": hashlib.sha256((live_hub.secret + nonce).encode()).hexdigest(),
    }
    headers["authorization"] = send("POST", api + "token", credentials)["token"][0]["token"]

    # The sample takes the template id from GET /org/:org_id/templates; make one for it to find.
    template_body = {
        "name": "Tickets to Jira",
        "description": "for the sample",
        "definition": {
            "connections": [
                {"id": "jira", "type": "jira", "name": "Jira Cloud"},
                {"id": "notify", "type": "slack", "name": "Slack"},
            ],
            "flows": [
                {
                    "key": "create-issue",
                    "trigger": {"type": "jwt"},
                    "steps": [{"id": "create", "type": "http", "connection": "jira", "method": "POST", "path": "/x"}],
                }
            ],
        },
    }
    template_id = send("POST", api + "template/org/1", template_body)["templates"][0]["id"]

    # CREATE ORGANIZATION (default parent: the caller's org)
    organizations = send("POST", api + "org", {"name": "Brand New Org"})["organizations"]
    org_id = organizations[0]["id"]
    assert organizations[0]["parentId"] == "1"
    listed = send("GET", api + f"org/{org_id}/templates", None)["templates"]
    assert template_id in [t["id"] for t in listed]

    # CREATE PROJECT
    new_project = {"name": "Best Project Ever", "description": "The best project", "templateId": template_id}
    projects = send("POST", api + "project/org/" + org_id, new_project)["projects"]
    project_id = projects[0]["id"]
    template_connections = projects[0]["templateConnections"]
    assert len(template_connections) != 0
    assert [c["id"] for c in template_connections] == ["jira", "notify"]

    # ADD TEMPLATE CONNECTIONS
    connections = [{"id": c["id"], "details": {"type": c["type"]}} for c in template_connections]
    updated = send("PUT", api + "project/" + project_id, {"connections": connections})["projects"][0]
    assert [(c["id"], c["type"], c["configured"]) for c in updated["connections"]] == [
        ("jira", "jira", False),
        ("notify", "slack", False),
    ]

    # ADD USERS
    users = [
        {"name": "Steve Owner", "email": f"steve-{nonce[:8]}@owner.com", "role": "Owner"},
        {"name": "Sally Member", "email": f"sally-{nonce[:8]}@member.com", "role": "Member"},
        {"name": "Jack Admin", "email": f"jack-{nonce[:8]}@admin.com", "role": "Member"},
    ]
    created = send("POST", api + "user/org/" + org_id, users)["users"]
    assert [(u["name"], u["role"], u["orgId"]) for u in created] == [
        ("Steve Owner", "Owner", org_id),
        ("Sally Member", "Member", org_id),
        ("Jack Admin", "Member", org_id),
    ]
