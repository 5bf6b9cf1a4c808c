"""The failure inbox API: groups summed over the caller's subtree only (two sibling organizations sharing one
template never see each other's counts, organizations or runs), filters, keyset pages and refusals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from api_helpers import login_new_user
from failure_seed import BASE, Seeded, seed
from ihub.runs import inbox as inbox_module

pytestmark = pytest.mark.anyio


async def inbox(client: Any, auth: dict[str, str], org: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/api/v1/org/{org}/failures", params=params, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def group_runs(client: Any, auth: dict[str, str], org: str, key: str, **params: Any) -> list[str]:
    response = await client.get(f"/api/v1/org/{org}/failures/{key}/runs", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return [run["id"] for run in response.json()["runs"]]


def ids(seeded: Seeded, key: str, *orgs: str) -> list[str]:
    return [str(i) for i in sorted((i for org in orgs for i in seeded.runs[key][org]), reverse=True)]


async def test_groups_are_summed_over_the_callers_subtree_only(app, client, auth) -> None:  # noqa: ANN001
    seeded = await seed(app, client, auth)
    a, a_child, b = seeded.a, seeded.a_child, seeded.b

    # The root sees both groups, the latest failure first, counted over every organization.
    root = (await inbox(client, auth, "1"))["failures"]
    assert [g["key"] for g in root] == [seeded.b_only, seeded.shared]
    shared = root[1]
    assert shared["count"] == 10 and shared["flowKey"] == "sync" and shared["step"] == "create"
    assert {o["id"]: o["count"] for o in shared["organizations"]} == {a: 3, a_child: 2, b: 5}
    assert shared["firstSeen"].startswith("2026-03-01T09:00:00") and shared["lastSeen"].startswith("2026-03-01T09:24")
    assert shared["templateId"] == str(seeded.template_id) and shared["templateName"].startswith("shared-")
    assert "HTTP 422" in shared["signature"] and "'b'" in shared["sampleError"]  # b failed last

    # An Admin of `a` (a Member alike) sees a's and its child's share of the shared group, nothing of b's.
    for role in ("Admin", "Member"):
        a_auth = await login_new_user(client, auth, a, role)
        mine = (await inbox(client, a_auth, a))["failures"]
        assert [g["key"] for g in mine] == [seeded.shared]
        assert mine[0]["count"] == 5 and {o["id"] for o in mine[0]["organizations"]} == {a, a_child}
        assert mine[0]["lastSeen"].startswith("2026-03-01T09:11") and "'a_child'" in mine[0]["sampleError"]
        assert await group_runs(client, a_auth, a, seeded.shared) == ids(seeded, seeded.shared, a, a_child)
        # b's organization, b's own group, b's share through a's org: 404 like anything unknown.
        for url in (
            f"/api/v1/org/{b}/failures",
            f"/api/v1/org/{b}/failures/{seeded.shared}/runs",
            f"/api/v1/org/{a}/failures/{seeded.b_only}/runs",
        ):
            response = await client.get(url, headers=a_auth)
            assert response.status_code == 404, (url, response.text)
    # The child's view: its own two failures.
    child = (await inbox(client, await login_new_user(client, auth, a_child, "Member"), a_child))["failures"]
    assert [(g["count"], [o["id"] for o in g["organizations"]]) for g in child] == [(2, [a_child])]

    # b sees its five runs of the shared group and its own group; none of a's.
    b_auth = await login_new_user(client, auth, b, "Member")
    assert {g["key"]: g["count"] for g in (await inbox(client, b_auth, b))["failures"]} == {
        seeded.shared: 5,
        seeded.b_only: 1,
    }
    assert await group_runs(client, b_auth, b, seeded.shared) == ids(seeded, seeded.shared, b)


async def test_filters_pages_and_refusals(app, client, auth) -> None:  # noqa: ANN001
    seeded = await seed(app, client, auth)
    assert [g["key"] for g in (await inbox(client, auth, "1", flow="sync"))["failures"]] == [seeded.shared]
    assert (await inbox(client, auth, "1", flow="nothing"))["failures"] == []
    assert len((await inbox(client, auth, "1", template=str(seeded.template_id)))["failures"]) == 2
    assert (await inbox(client, auth, "1", template="999999"))["failures"] == []
    # since applies to the group's last failure in the subtree: b's shared failures make it recent at the root,
    # a's alone do not.
    since = (BASE + timedelta(minutes=15)).isoformat()
    assert len((await inbox(client, auth, "1", since=since))["failures"]) == 2
    assert (await inbox(client, auth, seeded.a, since=since))["failures"] == []
    assert len((await inbox(client, auth, seeded.a, since=BASE.isoformat()))["failures"]) == 1

    # Keyset pages: each group once, in order.
    first = await inbox(client, auth, "1", limit=1)
    assert [g["key"] for g in first["failures"]] == [seeded.b_only] and first["nextCursor"]
    second = await inbox(client, auth, "1", limit=1, cursor=first["nextCursor"])
    assert [g["key"] for g in second["failures"]] == [seeded.shared] and second["nextCursor"] is None
    # A group's runs in keyset pages too.
    pages, cursor = [], None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/api/v1/org/1/failures/{seeded.shared}/runs", params=params, headers=auth)
        pages += [run["id"] for run in response.json()["runs"]]
        cursor = response.json()["nextCursor"]
        if cursor is None:
            break
    assert pages == ids(seeded, seeded.shared, seeded.a, seeded.a_child, seeded.b)

    for bad in (
        {"cursor": "nope"},
        {"template": "abc"},
        {"flow": "12"},
        {"since": "2026-01-01T00:00:00"},
        {"limit": 0},
    ):
        response = await client.get("/api/v1/org/1/failures", params=bad, headers=auth)
        assert response.status_code == 400, (bad, response.text)
    for url in ("/api/v1/org/1/failures/NOT-A-KEY/runs", f"/api/v1/org/1/failures/{'0' * 32}/runs"):
        assert (await client.get(url, headers=auth)).status_code == 404
    assert (await client.get("/api/v1/org/999999/failures", headers=auth)).status_code == 404


async def test_the_runs_list_takes_a_time_range(app, client, auth) -> None:  # noqa: ANN001
    seeded = await seed(app, client, auth)
    project = seeded.projects["b"]["id"]
    b_runs = seeded.runs[seeded.shared][seeded.b]  # created at minutes 20..24 of BASE
    params = {"since": (BASE + timedelta(minutes=21)).isoformat(), "until": (BASE + timedelta(minutes=24)).isoformat()}
    response = await client.get(f"/api/v1/project/{project}/runs", params=params, headers=auth)
    assert [r["id"] for r in response.json()["runs"]] == [str(i) for i in b_runs[1:4][::-1]]
    assert response.json()["runs"][0]["failureKey"] == seeded.shared
    response = await client.get(f"/api/v1/project/{project}/runs", params={"until": "2026-01-01T00:00"}, headers=auth)
    assert response.status_code == 400 and "until" in response.text


async def test_the_most_affected_organizations_are_listed_and_all_counted(app, client, auth, monkeypatch) -> None:  # noqa: ANN001
    seeded = await seed(app, client, auth)
    monkeypatch.setattr(inbox_module, "ORGS_LISTED", 2)
    shared = next(g for g in (await inbox(client, auth, "1"))["failures"] if g["key"] == seeded.shared)
    assert [(o["id"], o["count"]) for o in shared["organizations"]] == [(seeded.b, 5), (seeded.a, 3)]
    assert shared["organizationCount"] == 3 and shared["count"] == 10
    # With one listed, a's subtree lists a (3 failures); the sample is still the latest, a_child's.
    monkeypatch.setattr(inbox_module, "ORGS_LISTED", 1)
    (mine,) = (await inbox(client, auth, seeded.a))["failures"]
    assert [(o["id"], o["count"]) for o in mine["organizations"]] == [(seeded.a, 3)] and mine["organizationCount"] == 2
    assert "'a_child'" in mine["sampleError"]
