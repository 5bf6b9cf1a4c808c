"""Runs execute the template version they started on: the project's pin at trigger time, kept through retries,
resumes and (by default) replays; compiled once per version per process."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from flowkit import Kit, jira_definition
from sqlalchemy import update

from db_snapshot import NothingWritten
from ihub.db.base import utcnow
from ihub.executors import dispatch
from ihub.runs.models import Run, StepRecord

pytestmark = pytest.mark.anyio


def flow(label: str, *, park: bool = False) -> dict[str, Any]:
    """A manual flow answering which definition ran it; `park` adds an hour's delay before the answer."""
    steps: list[dict[str, Any]] = [{"id": "before", "type": "map", "set": {"label": label}}]
    if park:
        steps.append({"id": "pause", "type": "delay", "seconds": 3600})
    steps.append({"id": f"answer_{label}", "type": "respond", "body": {"ran": "{{ vars.label }}"}})
    return {"key": "f", "trigger": "manual", "steps": steps}


async def save(kit: Kit, project: dict[str, Any], definition: dict[str, Any]) -> int:
    response = await kit.client.put(
        f"/api/v1/template/{project['templateId']}", json={"definition": definition}, headers=kit.auth
    )
    assert response.status_code == 200, response.text
    return int(response.json()["templates"][0]["version"])


async def pin(kit: Kit, project: dict[str, Any], version: int | None = None) -> dict[str, Any]:
    body = {} if version is None else {"version": version}
    response = await kit.client.post(f"/api/v1/project/{project['id']}/upgrade", json=body, headers=kit.auth)
    assert response.status_code == 200, response.text
    return response.json()["projects"][0]


async def run_once(kit: Kit, project: dict[str, Any]) -> dict[str, Any]:
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}))
    assert run["status"] == "succeeded", run
    return run


async def test_runs_follow_the_pin_not_the_latest_save(kit: Kit) -> None:
    project = await kit.project(jira_definition([flow("v1")], slot_type="http"))
    assert await save(kit, project, jira_definition([flow("v2")], slot_type="http")) == 2

    # The template changed; the project did not: its runs still execute version 1's steps.
    run = await run_once(kit, project)
    assert (run["flowVersion"], run["result"]["body"]) == (1, {"ran": "v1"})
    assert "answer_v2" not in [s["stepId"] for s in run["steps"]]

    await pin(kit, project)
    run = await run_once(kit, project)
    assert (run["flowVersion"], run["result"]["body"]) == (2, {"ran": "v2"})

    # Rollback: new runs are back on version 1.
    await pin(kit, project, 1)
    run = await run_once(kit, project)
    assert (run["flowVersion"], run["result"]["body"]) == (1, {"ran": "v1"})


async def test_a_parked_run_resumes_on_its_own_version_after_an_upgrade(kit: Kit) -> None:
    project = await kit.project(jira_definition([flow("v1", park=True)], slot_type="http"))
    run_id = await kit.trigger(kit.flow_id(project, "f"), {})
    # Wait until the run is parked in its delay (released, due in an hour).
    for _ in range(300):
        run = await kit.run(run_id)
        parked = any(s["stepId"] == "pause" and s["status"] == "waiting" for s in run["steps"])
        if parked and run["status"] == "queued":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"run {run_id} never parked: {run}")

    # Meanwhile the template moves on and the project is upgraded to a definition without the delay.
    await save(kit, project, jira_definition([flow("v2")], slot_type="http"))
    await pin(kit, project)

    # Make the pause due now (the run and its waiting step record) and hand the run to the executor again.
    context = kit.app.state.context
    past = utcnow() - timedelta(seconds=1)
    async with context.sessions() as session:
        await session.execute(update(Run).where(Run.id == int(run_id)).values(next_attempt_at=past))
        await session.execute(
            update(StepRecord)
            .where(StepRecord.run_id == int(run_id), StepRecord.status == "waiting")
            .values(state={"until": past.isoformat(), "seconds": 3600})
        )
        await session.commit()
    await dispatch(context, int(run_id))
    run = await kit.wait(run_id)
    assert run["status"] == "succeeded", run
    assert (run["flowVersion"], run["result"]["body"]) == (1, {"ran": "v1"})
    assert [s["stepId"] for s in run["steps"]][-1] == "answer_v1"


async def test_replay_original_or_current(kit: Kit, app) -> None:  # noqa: ANN001
    project = await kit.project(jira_definition([flow("v1")], slot_type="http"))
    first = await run_once(kit, project)
    await save(kit, project, jira_definition([flow("v2")], slot_type="http"))
    await pin(kit, project)

    async def replay(body: Any = None, **kwargs: Any) -> dict[str, Any]:
        response = await kit.client.post(f"/api/v1/run/{first['id']}/replay", headers=kit.auth, json=body, **kwargs)
        assert response.status_code == 202, response.text
        return await kit.wait(response.json()["runId"])

    # No body (as before versions): the original version.
    for run in (await replay(), await replay({"version": "original"}), await replay(data={"version": "original"})):
        assert (run["flowVersion"], run["result"]["body"], run["replayOf"]) == (1, {"ran": "v1"}, first["id"])
    run = await replay({"version": "current"})
    assert (run["flowVersion"], run["result"]["body"]) == (2, {"ran": "v2"})

    for bad in ({"version": "latest"}, {"version": 2}, ["original"]):
        async with NothingWritten(app):
            response = await kit.client.post(f"/api/v1/run/{first['id']}/replay", json=bad, headers=kit.auth)
        assert response.status_code == 400, response.text
        assert "version" in response.json()["metadata"]["message"] or bad == ["original"]


async def test_each_version_is_compiled_once_per_process(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    from ihub.flows import service

    calls: list[str] = []
    real = service.compile_flow

    def counting(value: Any, slots: dict[str, str], path: str) -> Any:
        calls.append(str(value.get("steps", [{}])[-1].get("id")))
        return real(value, slots, path)

    monkeypatch.setattr(service, "compile_flow", counting)
    project = await kit.project(jira_definition([flow("v1")], slot_type="http"))
    for _ in range(3):
        run = await run_once(kit, project)
        assert run["result"]["body"] == {"ran": "v1"}
    # Trigger, claim and engine load of three runs: one compilation.
    assert calls == ["answer_v1"]

    await save(kit, project, jira_definition([flow("v2")], slot_type="http"))
    await pin(kit, project)
    for _ in range(2):
        run = await run_once(kit, project)
        assert (run["flowVersion"], run["result"]["body"]) == (2, {"ran": "v2"})
    assert calls == ["answer_v1", "answer_v2"]
