"""Reading the audit log: Owners only, their subtree only (sibling tenants never see each other's entries),
filters, keyset pages and the JSON-lines export."""

from __future__ import annotations

import json

import pytest
from audit_kit import count

from api_helpers import Api

pytestmark = pytest.mark.anyio


async def _rename(api: Api, org_id: str, name: str, headers: dict[str, str]) -> None:
    response = await api.client.put(f"/api/v1/org/{org_id}", json={"name": name}, headers=headers)
    assert response.status_code == 200, response.text


async def test_owners_read_their_subtree_and_never_a_sibling(app, api: Api) -> None:  # noqa: ANN001
    left, right = await api.add_org("left", "1"), await api.add_org("right", "1")
    left_owner = await api.headers_for(await api.add_user(left, "Owner"))
    right_owner = await api.headers_for(await api.add_user(right, "Owner"))
    await _rename(api, left, "left-renamed", left_owner)
    await _rename(api, right, "right-renamed", right_owner)

    seen_left = (await api.client.get("/api/v1/audit", headers=left_owner)).json()["entries"]
    assert seen_left, "the left Owner sees the entries of their organization"
    assert {e["orgId"] for e in seen_left} == {left}
    assert "right-renamed" not in json.dumps(seen_left)
    assert any(e["changes"][0]["after"] == {"name": "left-renamed"} for e in seen_left)

    # Naming the sibling organization is a 404, as for any object of another tenant.
    other = await api.client.get("/api/v1/audit", params={"org": right}, headers=left_owner)
    assert other.status_code == 404
    exported = await api.client.get("/api/v1/audit/export", params={"org": right}, headers=left_owner)
    assert exported.status_code == 404

    # The root Owner sees both, and the entry says who did it.
    everything = (await api.client.get("/api/v1/audit", params={"limit": 200}, headers=api.auth)).json()["entries"]
    renames = [e for e in everything if e["action"] == "PUT /api/v1/org/{org_id}"]
    assert {e["orgId"] for e in renames} == {left, right}
    assert all(e["actor"]["userId"] and e["channel"] == "api" for e in renames)


async def test_admins_and_members_are_refused(app, api: Api) -> None:  # noqa: ANN001
    org = await api.add_org("o", "1")
    for role in ("Admin", "Member"):
        headers = await api.headers_for(await api.add_user(org, role))
        for path in ("/api/v1/audit", "/api/v1/audit/export"):
            response = await api.client.get(path, headers=headers)
            assert response.status_code == 403, (role, path, response.text)
    assert (await api.client.get("/api/v1/audit")).status_code == 401


async def test_filters_pages_and_export(app, api: Api) -> None:  # noqa: ANN001
    org = await api.add_org("o", "1")
    for index in range(5):
        await _rename(api, org, f"name-{index}", api.auth)
    params = {"action": "PUT /api/v1/org/{org_id}", "targetType": "organizations", "targetId": org, "limit": 2}
    pages: list[list[dict[str, object]]] = []
    cursor = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        body = (await api.client.get("/api/v1/audit", params=query, headers=api.auth)).json()
        pages.append(body["entries"])
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    names = [e["changes"][0]["after"]["name"] for page in pages for e in page]
    assert names == [f"name-{index}" for index in reversed(range(5))], "newest first, no entry twice"

    # Another actor's filter matches none of them; since in the future neither.
    assert (await api.client.get("/api/v1/audit", params=params | {"actor": "999"}, headers=api.auth)).json()[
        "entries"
    ] == []
    future = {"since": "2999-01-01T00:00:00Z"}
    assert (await api.client.get("/api/v1/audit", params=future, headers=api.auth)).json()["entries"] == []
    bad = await api.client.get("/api/v1/audit", params={"since": "2020-01-01T00:00:00"}, headers=api.auth)
    assert bad.status_code == 400

    exported = await api.client.get("/api/v1/audit/export", params={"targetId": org}, headers=api.auth)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert len(lines) == 6  # the creation and the five renames
    assert lines[0]["changes"][0]["after"] == {"name": "name-4"}
    assert lines[-1]["action"] == "POST /api/v1/org"


async def test_reading_the_log_writes_nothing(app, api: Api) -> None:  # noqa: ANN001
    before = await count(app)
    assert (await api.client.get("/api/v1/audit", headers=api.auth)).status_code == 200
    assert (await api.client.get("/api/v1/org", headers=api.auth)).status_code == 200
    assert await count(app) == before
