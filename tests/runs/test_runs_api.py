"""The run API: list with keyset pagination and filters, show, replay, cancel, manual trigger, retention,
and the tenancy rules (callers see runs of their org subtree only)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest
from flowkit import http_connection, jira_definition
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select, update
from werkzeug import Request, Response

from db_snapshot import NothingWritten
from ihub.db.base import utcnow
from ihub.runs.models import Run, StepRecord
from ihub.runs.service import purge_runs

pytestmark = pytest.mark.anyio

ECHO = {
    "key": "echo",
    "trigger": "manual",
    "steps": [{"id": "out", "type": "respond", "body": {"got": "{{ trigger.body.n }}"}}],
}
OTHER = {"key": "other", "trigger": "manual", "steps": [{"id": "m", "type": "map", "set": {"a": 1}}]}


async def test_pagination_filters_and_show(kit) -> None:
    project = await kit.project(jira_definition([ECHO, OTHER], slot_type="http"))
    echo, other = kit.flow_id(project, "echo"), kit.flow_id(project, "other")
    ids = [await kit.trigger(echo, {"n": n}) for n in range(7)]
    other_id = await kit.trigger(other, {})
    for run_id in [*ids, other_id]:
        await kit.wait(run_id)

    pages, cursor = [], None
    while True:
        params = {"limit": 3, "flow": "echo", **({"cursor": cursor} if cursor else {})}
        response = await kit.client.get(f"/api/v1/project/{project['id']}/runs", params=params, headers=kit.auth)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([r["id"] for r in body["runs"]])
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert pages == [ids[6:3:-1], ids[3:0:-1], ids[0:1]]

    response = await kit.client.get(
        f"/api/v1/project/{project['id']}/runs", params={"flow": other, "status": "succeeded"}, headers=kit.auth
    )
    assert [r["id"] for r in response.json()["runs"]] == [other_id]
    response = await kit.client.get(
        f"/api/v1/project/{project['id']}/runs", params={"status": "failed"}, headers=kit.auth
    )
    assert response.json() == {"runs": [], "nextCursor": None}
    future = (utcnow() + timedelta(minutes=1)).isoformat()
    response = await kit.client.get(f"/api/v1/project/{project['id']}/runs", params={"since": future}, headers=kit.auth)
    assert response.json()["runs"] == []
    for bad in ({"status": "done"}, {"cursor": "abc"}, {"limit": 0}, {"limit": 1000}):
        response = await kit.client.get(f"/api/v1/project/{project['id']}/runs", params=bad, headers=kit.auth)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["metadata"]["status"] == 400

    run = await kit.run(ids[2])
    assert run["status"] == "succeeded"
    assert run["flowKey"] == "echo"
    assert run["triggerType"] == "manual"
    assert run["trigger"]["body"] == {"n": 2}
    assert run["result"] == {"status": 200, "body": {"got": 2}}
    assert [s["stepId"] for s in run["steps"]] == ["out"]


async def test_replay_uses_the_same_payload_and_the_chosen_version(kit) -> None:
    project = await kit.project(jira_definition([ECHO], slot_type="http"))
    flow_id = kit.flow_id(project, "echo")
    original = await kit.wait(await kit.trigger(flow_id, {"n": 41}))

    # Change the flow in the template and upgrade the project: a replay asked for "current" runs the new version.
    template_id = project["templateId"]
    changed = {**ECHO, "steps": [{"id": "out", "type": "respond", "body": {"again": "{{ trigger.body.n + 1 }}"}}]}
    response = await kit.client.put(
        f"/api/v1/template/{template_id}",
        json={"definition": jira_definition([changed], slot_type="http")},
        headers=kit.auth,
    )
    assert response.status_code == 200, response.text
    response = await kit.client.post(f"/api/v1/project/{project['id']}/upgrade", headers=kit.auth)
    assert response.status_code == 200, response.text

    response = await kit.client.post(
        f"/api/v1/run/{original['id']}/replay", json={"version": "current"}, headers=kit.auth
    )
    assert response.status_code == 202, response.text
    assert response.json()["flowId"] == flow_id
    replay = await kit.wait(response.json()["runId"])
    assert replay["id"] != original["id"]
    assert replay["replayOf"] == original["id"]
    assert replay["trigger"]["body"] == {"n": 41}
    assert replay["result"]["body"] == {"again": 42}
    assert replay["flowVersion"] > original["flowVersion"]


async def test_cancel_queued_running_and_finished(kit, httpserver: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(0.8)
        return Response(json.dumps({"ok": True}), status=200, content_type="application/json")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    waiting = {"key": "waiting", "trigger": "manual", "steps": [{"id": "pause", "type": "delay", "seconds": 60}]}
    slow_flow = {
        "key": "slow",
        "trigger": "manual",
        "steps": [
            {"id": "call", "type": "http", "connection": "jira", "path": "/slow"},
            {"id": "after", "type": "http", "connection": "jira", "path": "/slow"},
        ],
    }
    project = await kit.project(
        jira_definition([waiting, slow_flow, ECHO], slot_type="http"), [http_connection(httpserver.url_for("/"))]
    )

    # A run waiting out a delay is queued again: cancelling it is immediate.
    queued = await kit.trigger(kit.flow_id(project, "waiting"), {})
    run = await kit.wait(queued, statuses=("queued",))
    # Queued at first too, before the executor took it: wait for the delay's record (a loaded machine can take
    # seconds to get there; the loop ends as soon as it is written).
    deadline = time.monotonic() + 30
    while not run["steps"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        run = await kit.run(queued)
    assert run["steps"][0]["status"] == "waiting"
    response = await kit.client.post(f"/api/v1/run/{queued}/cancel", headers=kit.auth)
    assert response.status_code == 200, response.text
    assert response.json()["runs"][0]["status"] == "cancelled"

    # A running run stops before its next step. Cancelled once its first call is under way (its record is
    # written before the request is sent).
    running = await kit.trigger(kit.flow_id(project, "slow"), {})
    run = await kit.wait(running, statuses=("running",))
    deadline = time.monotonic() + 5
    while not run["steps"] and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        run = await kit.run(running)
    response = await kit.client.post(f"/api/v1/run/{running}/cancel", headers=kit.auth)
    assert response.status_code == 200
    run = await kit.wait(running)
    assert run["status"] == "cancelled"
    assert [s["path"] for s in run["steps"]] == ["call"]
    assert len(httpserver.log) == 1

    # Finished runs cannot be cancelled.
    done = await kit.wait(await kit.trigger(kit.flow_id(project, "echo"), {"n": 1}))
    response = await kit.client.post(f"/api/v1/run/{done['id']}/cancel", headers=kit.auth)
    assert response.status_code == 409
    assert response.json()["metadata"]["code"] == "run_finished"


async def test_tenancy_and_auth(kit) -> None:
    org_a, org_b = await kit.org(), await kit.org()
    project = await kit.project(jira_definition([ECHO], slot_type="http"), org_id=org_a)
    flow_id = kit.flow_id(project, "echo")
    run_id = await kit.trigger(flow_id, {"n": 1})
    await kit.wait(run_id)

    member_a = await kit.login(org_a, "Member")
    outsider = await kit.login(org_b, "Admin")
    # A member of the project's org may read, trigger, replay.
    response = await kit.client.post(f"/api/v1/flow/{flow_id}/run", json={"n": 2}, headers=member_a)
    assert response.status_code == 202
    await kit.wait(response.json()["runId"])  # nothing runs while the refusals below are checked
    assert (await kit.client.get(f"/api/v1/run/{run_id}", headers=member_a)).status_code == 200
    assert (await kit.client.get(f"/api/v1/project/{project['id']}/runs", headers=member_a)).status_code == 200

    requests = [
        ("GET", f"/api/v1/project/{project['id']}/runs"),
        ("GET", f"/api/v1/run/{run_id}"),
        ("POST", f"/api/v1/run/{run_id}/replay"),
        ("POST", f"/api/v1/run/{run_id}/cancel"),
        ("POST", f"/api/v1/flow/{flow_id}/run"),
    ]
    for method, url in requests:
        async with NothingWritten(kit.app):
            response = await kit.client.request(method, url, headers=outsider, json={})
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["metadata"]["code"] == "not_found"
        response = await kit.client.request(method, url, json={})
        assert response.status_code == 401, (method, url)
        response = await kit.client.request(method, url, headers={"Authorization": "Bearer nope"}, json={})
        assert response.status_code == 401, (method, url)
    for url in ("/api/v1/run/999999", "/api/v1/run/abc", "/api/v1/project/999999/runs"):
        assert (await kit.client.get(url, headers=kit.auth)).status_code == 404
    assert (await kit.client.post("/api/v1/flow/999999/run", json={}, headers=kit.auth)).status_code == 404


async def test_retention_purges_old_finished_runs(kit) -> None:
    project = await kit.project(jira_definition([ECHO], slot_type="http"))
    flow_id = kit.flow_id(project, "echo")
    old = [await kit.trigger(flow_id, {"n": n}) for n in range(3)]
    fresh = await kit.trigger(flow_id, {"n": 9})
    for run_id in [*old, fresh]:
        await kit.wait(run_id)
    sessions = kit.app.state.context.sessions
    async with sessions() as session:
        aged = utcnow() - timedelta(days=31)
        await session.execute(update(Run).where(Run.id.in_([int(i) for i in old])).values(created_at=aged))
        # An unfinished old run is kept (it may still be running).
        await session.execute(update(Run).where(Run.id == int(old[0])).values(status="running"))
        await session.commit()
    async with sessions() as session:
        purged = await purge_runs(session, older_than_days=30)
        await session.commit()
    assert purged == 2
    async with sessions() as session:
        left = set((await session.scalars(select(Run.id))).all())
        records = await session.scalar(
            select(func.count()).select_from(StepRecord).where(StepRecord.run_id.in_([int(i) for i in old[1:]]))
        )
    assert left == {int(old[0]), int(fresh)}
    assert records == 0


async def test_run_detail_pages_its_step_records(client, auth, kit) -> None:  # noqa: ANN001
    """A run with more step records than one answer holds shows them in pages, in order, each record once."""
    from ihub.runs.service import STEP_PAGE

    count = STEP_PAGE + 150
    flow = {
        "key": "many",
        "trigger": "manual",
        "steps": [
            {
                "id": "outer",
                "type": "foreach",
                "items": f"{{{{ range({count // 250 + 1}) }}}}",
                "steps": [
                    {
                        "id": "inner",
                        "type": "foreach",
                        "items": "{{ range(250) }}",
                        "steps": [{"id": "n", "type": "map", "set": {"n": "{{ item }}"}}],
                    }
                ],
            }
        ],
    }
    project = await kit.project({"connections": [], "flows": [flow]})
    run_id = await kit.trigger(kit.flow_id(project, "many"), {})
    await kit.wait(run_id, timeout=120)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        response = await client.get(
            f"/api/v1/run/{run_id}", params={"stepsAfter": after} if after else {}, headers=auth
        )
        assert response.status_code == 200, response.text
        run = response.json()["runs"][0]
        assert run["status"] == "succeeded", run["error"]
        assert len(run["steps"]) <= STEP_PAGE
        seen += [step["id"] for step in run["steps"]]
        pages += 1
        after = run["stepsNextCursor"]
        if after is None:
            break
    assert pages >= 2
    assert len(seen) == len(set(seen)) and len(seen) > STEP_PAGE
    bad = await client.get(f"/api/v1/run/{run_id}", params={"stepsAfter": "²"}, headers=auth)
    assert bad.status_code == 400 and "stepsAfter" in bad.text


async def test_an_organizations_runs_cover_its_subtree_only(kit) -> None:
    parent = await kit.org()
    child, sibling = await kit.org(parent), await kit.org()
    definition = jira_definition([ECHO, OTHER], slot_type="http")
    in_parent, in_child, in_sibling = [await kit.project(definition, org_id=org) for org in (parent, child, sibling)]
    runs = {}
    for name, project in (("parent", in_parent), ("child", in_child), ("sibling", in_sibling)):
        runs[name] = await kit.trigger(kit.flow_id(project, "echo"), {"n": 1})
    runs["other"] = await kit.trigger(kit.flow_id(in_child, "other"), {})
    for run_id in runs.values():
        await kit.wait(run_id)

    async def listed(org: str, headers: dict[str, str] | None = None, **params: str) -> list[str]:
        response = await kit.client.get(f"/api/v1/org/{org}/runs", params=params, headers=headers or kit.auth)
        assert response.status_code == 200, response.text
        return [run["id"] for run in response.json()["runs"]]

    assert await listed(parent) == [runs["other"], runs["child"], runs["parent"]]
    assert await listed(parent, flow="echo") == [runs["child"], runs["parent"]]
    assert await listed(parent, status="failed") == []
    assert await listed(parent, limit="1", cursor=runs["child"]) == [runs["parent"]]
    assert await listed(child) == [runs["other"], runs["child"]]
    # A member of the child sees the child's runs; the parent (and a sibling) are another tenant's: 404.
    member = await kit.login(child, "Member")
    assert await listed(child, member) == [runs["other"], runs["child"]]
    for org in (parent, sibling, "999999"):
        response = await kit.client.get(f"/api/v1/org/{org}/runs", headers=member)
        assert response.status_code == 404, response.text
    response = await kit.client.get(f"/api/v1/org/{parent}/runs", params={"status": "done"}, headers=kit.auth)
    assert response.status_code == 400
