"""Claims and leases: two workers racing for one run execute it once; a worker whose lease expired (and was
taken over) cannot record anything any more; the reconciler picks up orphaned runs."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from flowkit import http_connection, jira_definition
from pytest_httpserver import HTTPServer
from sqlalchemy import select, update
from werkzeug import Request, Response

from ihub.db.base import utcnow
from ihub.flows.engine import Engine
from ihub.flows.models import Flow
from ihub.runs.models import Run, StepRecord
from ihub.runs.service import create_run, due_run_ids

pytestmark = pytest.mark.anyio

FLOW = {
    "key": "f",
    "trigger": "manual",
    "steps": [
        {"id": "call", "type": "http", "connection": "jira", "method": "POST", "path": "/hit"},
        {"id": "out", "type": "respond", "body": "{{ steps.call.output }}"},
    ],
}


@pytest.fixture
def settings(settings):  # noqa: ANN001, ANN201
    # No executor in the app: the test drives engines by hand.
    return settings.model_copy(update={"executor": "local"})


@pytest.fixture
async def app(settings):  # noqa: ANN001, ANN201
    from ihub.app import create_app

    application = create_app(settings, run_worker=False)
    async with application.router.lifespan_context(application):
        yield application


async def queued_run(kit, httpserver: HTTPServer) -> int:  # noqa: ANN001
    project = await kit.project(jira_definition([FLOW], slot_type="http"), [http_connection(httpserver.url_for("/"))])
    sessions = kit.app.state.context.sessions
    async with sessions() as session:
        flow = await session.get(Flow, int(kit.flow_id(project, "f")))
        run = await create_run(session, flow=flow, trigger_type="manual", trigger={"body": {}})
        await session.commit()
        return run.id


async def test_racing_workers_execute_once(kit, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hit").respond_with_json({"ok": 1})
    run_id = await queued_run(kit, httpserver)
    context = kit.app.state.context
    engines = [Engine(context, f"worker-{i}") for i in range(4)]
    try:
        outcomes = await asyncio.gather(*(engine.execute(run_id) for engine in engines))
    finally:
        for engine in engines:
            await engine.close()
    assert sorted(o.status if o else "none" for o in outcomes) == ["none", "none", "none", "succeeded"]
    assert len(httpserver.log) == 1
    # Executing a finished run again does nothing.
    engine = Engine(context, "late")
    assert await engine.execute(run_id) is None
    await engine.close()
    assert len(httpserver.log) == 1


async def test_stale_worker_cannot_record_after_takeover(kit, httpserver: HTTPServer) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    calls: list[str] = []

    def slow(request: Request) -> Response:
        calls.append(request.headers["Idempotency-Key"])
        if len(calls) == 1:
            loop.call_soon_threadsafe(entered.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
        return Response(json.dumps({"n": len(calls)}), status=200, content_type="application/json")

    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.expect_request("/hit").respond_with_handler(slow)
    server.start()
    context = kit.app.state.context
    stale, fresh = Engine(context, "stale", lease_seconds=30), Engine(context, "fresh")
    try:
        run_id = await queued_run(kit, server)
        first = asyncio.create_task(stale.execute(run_id))
        await asyncio.wait_for(entered.wait(), 10)
        # The stale worker looks dead: its lease runs out and another worker takes over and finishes.
        async with context.sessions() as session:
            await session.execute(
                update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
        async with context.sessions() as session:
            assert await due_run_ids(session, limit=10) == [run_id]
        outcome = await fresh.execute(run_id)
        assert outcome is not None and outcome.status == "succeeded"
        release.set()
        assert await first is None  # the stale worker notices and stops without writing
    finally:
        release.set()
        await stale.close()
        await fresh.close()
        server.stop()
    async with context.sessions() as session:
        run = await session.get(Run, run_id)
        records = (
            await session.scalars(select(StepRecord).where(StepRecord.run_id == run_id).order_by(StepRecord.id))
        ).all()
    assert run.status == "succeeded" and run.lease_owner == "fresh"
    assert run.result["body"] == {"n": 2}
    assert [(r.path, r.status) for r in records] == [
        ("call", "interrupted"),
        ("call", "succeeded"),
        ("out", "succeeded"),
    ]
    assert calls == [f"{run.uid}-call", f"{run.uid}-call"]


async def test_stopping_a_worker_hands_its_runs_back(kit, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hit").respond_with_json({"ok": 1})
    run_id = await queued_run(kit, httpserver)
    context = kit.app.state.context
    engine = Engine(context, "leaving")
    assert await engine.claim(run_id)
    assert await engine.release_all() == [run_id]
    await engine.close()
    async with context.sessions() as session:
        run = await session.get(Run, run_id)
        assert run.status == "queued" and run.lease_expires_at is None
        assert await due_run_ids(session, limit=5) == [run_id]
    other = Engine(context, "other")
    outcome = await other.execute(run_id)
    await other.close()
    assert outcome is not None and outcome.status == "succeeded"
