"""Hostile bulk replay requests: a selection that names nothing, times that are not ISO 8601, and another
tenant's batches and flows. Each refusal writes nothing; each batch stays as it was."""

from __future__ import annotations

import pytest

from db_snapshot import NothingWritten
from replay_kit import batch, failed_runs, key, project

pytestmark = pytest.mark.anyio


EMPTY_SELECTIONS = [
    {},
    {"failureKey": None, "flow": None},  # a script's variables that came out empty
    {"status": "failed"},
    {"version": "current", "rate": 5},
]


async def test_a_selection_that_names_nothing_is_refused_not_every_failed_run(client, auth, app) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    await failed_runs(app, prj, 3, failure_key=key("a"))
    async with NothingWritten(app):
        for body in EMPTY_SELECTIONS:
            for dry_run in (False, True):
                response = await client.post("/api/v1/org/1/replays", json={**body, "dryRun": dry_run}, headers=auth)
                assert response.status_code == 400, (body, response.text)
                assert response.json()["metadata"]["code"] == "selection_empty", response.text
    # Any one criterion is a selection: a time range alone selects the subtree's failed runs in it.
    response = await client.post(
        "/api/v1/org/1/replays", json={"since": "2000-01-01T00:00:00Z", "dryRun": True}, headers=auth
    )
    assert response.status_code == 200 and response.json()["selected"] == 3, response.text


NOT_ISO = [20260101, "20260101", "1700000000", "1e10", 1.7e9]


async def test_times_must_be_iso_8601_not_unix_seconds(client, auth, app) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    await failed_runs(app, prj, 2, failure_key=key("a"))
    async with NothingWritten(app):
        for value in NOT_ISO:
            for name in ("since", "until"):
                body = {"flow": "sync", name: value, "dryRun": True}
                response = await client.post("/api/v1/org/1/replays", json=body, headers=auth)
                assert response.status_code == 400, (body, response.text)
                assert response.json()["metadata"]["errors"][0]["field"] == name, response.text
                assert "ISO 8601" in response.json()["metadata"]["message"]


async def test_another_tenant_cannot_resume_or_touch_a_batch_nor_reach_runs_by_flow_id(client, auth, app, api) -> None:  # noqa: ANN001
    acme, globex = await api.add_org("acme", "1"), await api.add_org("globex", "1")
    child = await api.add_org("acme-child", acme)
    acme_project = await project(client, auth, acme)
    await failed_runs(app, acme_project, 3, failure_key=key("9"))
    globex_owner = await api.headers_for(await api.add_user(globex, "Owner"))
    child_admin = await api.headers_for(await api.add_user(child, "Admin"))

    started = await client.post(f"/api/v1/org/{acme}/replays", json={"failureKey": key("9")}, headers=auth)
    batch_id = started.json()["replays"][0]["id"]
    assert (await client.post(f"/api/v1/replays/{batch_id}/pause", headers=auth)).status_code == 200

    # Neither another tenant's Owner nor an Admin of a sub-organization (below the batch's organization) sees it.
    async with NothingWritten(app):
        for headers in (globex_owner, child_admin):
            for action in ("resume", "cancel", "pause"):
                response = await client.post(f"/api/v1/replays/{batch_id}/{action}", headers=headers)
                assert response.status_code == 404, (action, response.text)
                assert response.json()["metadata"]["code"] == "not_found"
            assert (await client.get(f"/api/v1/replays/{batch_id}", headers=headers)).status_code == 404
    assert (await batch(app, batch_id)).status == "paused"
    listed = await client.get(f"/api/v1/org/{child}/replays", headers=child_admin)
    assert listed.status_code == 200 and listed.json()["replays"] == []

    # acme's flow id, given in globex's own organization, selects none of acme's runs.
    acme_flow = acme_project["flows"][0]["id"]
    preview = await client.post(
        f"/api/v1/org/{globex}/replays", json={"flow": acme_flow, "dryRun": True}, headers=globex_owner
    )
    assert preview.status_code == 200 and (preview.json()["selected"], preview.json()["sample"]) == (0, [])
    theirs = await client.post(f"/api/v1/org/{globex}/replays", json={"flow": acme_flow}, headers=globex_owner)
    assert theirs.status_code == 202 and theirs.json()["replays"][0]["selected"] == 0

    # The parent's Owner (here the root) may resume it: the batch is in their subtree.
    assert (await client.post(f"/api/v1/replays/{batch_id}/resume", headers=auth)).status_code == 200
    assert (await batch(app, batch_id)).status == "pending"
