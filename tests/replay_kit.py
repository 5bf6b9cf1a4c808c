"""For bulk replay tests: failed runs inserted directly (a thousand executions would take minutes), a worker
on a clock that only the worker's own waits move, and what the database says about replays."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func, select

from ihub.db.base import utcnow
from ihub.replays.models import ReplayBatch
from ihub.replays.worker import ReplayWorker
from ihub.runs.models import Run

# A manual flow that fails at its one step: what the inserted runs pretend to have run.
FAILING_FLOW: dict[str, Any] = {
    "key": "sync",
    "trigger": "manual",
    "steps": [{"id": "push", "type": "fail", "message": "HTTP 401 from the target"}],
}


def definition(flows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"connections": [], "flows": flows or [FAILING_FLOW]}


def key(letter: str) -> str:
    """A failure key (32 hex digits) easy to tell apart in a test."""
    return letter * 32


@dataclass
class FakeTime:
    """The worker's monotonic clock and sleep: time passes only when the worker waits, and every wait is kept."""

    now: float = 0.0
    waits: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def worker(app: Any, time: FakeTime | None = None, **kwargs: Any) -> ReplayWorker:
    time = time or FakeTime()
    return ReplayWorker(app.state.context, clock=time.clock, sleep=time.sleep, **kwargs)


async def project(client: httpx.AsyncClient, auth: dict[str, str], org_id: str = "1") -> dict[str, Any]:
    name = f"r-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "description": "", "definition": definition()}
    response = await client.post(f"/api/v1/template/org/{org_id}", json=body, headers=auth)
    assert response.status_code == 200, response.text
    template_id = response.json()["templates"][0]["id"]
    response = await client.post(
        f"/api/v1/project/org/{org_id}", json={"name": name, "templateId": template_id}, headers=auth
    )
    assert response.status_code == 200, response.text
    return response.json()["projects"][0]


async def failed_runs(
    app: Any,
    project: dict[str, Any],
    count: int,
    *,
    failure_key: str,
    status: str = "failed",
    flow_version: int = 1,
    replay_of: int | None = None,
) -> list[int]:
    """`count` finished runs of the project's flow, each with its own payload {"n": i}; their ids, oldest first."""
    flow_id = int(project["flows"][0]["id"])
    now = utcnow()
    runs = [
        Run(
            project_id=int(project["id"]),
            flow_id=flow_id,
            flow_version=flow_version,
            status=status,
            trigger_type="manual",
            trigger={"body": {"n": n}, "contentType": "application/json", "headers": {}},
            error="step push: HTTP 401 from the target" if status == "failed" else None,
            failed_step="push" if status == "failed" else None,
            failure_key=failure_key if status == "failed" else None,
            replay_of=replay_of,
            finished_at=now,
        )
        for n in range(count)
    ]
    async with app.state.context.sessions() as session:
        session.add_all(runs)
        await session.commit()
        return [run.id for run in runs]


async def replays_of(app: Any, originals: list[int]) -> Counter[int]:
    """How many replays each of `originals` has."""
    async with app.state.context.sessions() as session:
        rows = await session.execute(
            select(Run.replay_of, func.count()).where(Run.replay_of.in_(originals)).group_by(Run.replay_of)
        )
        return Counter({original: count for original, count in rows.all()})


async def batch(app: Any, batch_id: int | str) -> ReplayBatch:
    async with app.state.context.sessions() as session:
        found = await session.get(ReplayBatch, int(batch_id))
        assert found is not None
        return found


async def count_runs(app: Any) -> int:
    async with app.state.context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Run)) or 0)
