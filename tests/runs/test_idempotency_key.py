"""The Idempotency-Key an `http` step sends: the same on every attempt of a step, never the same for two runs,
even when run ids repeat (another hub, or this one after a database reset)."""

from __future__ import annotations

import re

import pytest
from flowkit import http_connection, jira_definition
from pytest_httpserver import HTTPServer
from sqlalchemy import delete, text
from werkzeug import Request, Response

from ihub.runs.models import Run, StepRecord

pytestmark = pytest.mark.anyio

CALL = {
    "key": "call",
    "trigger": "manual",
    "steps": [
        {
            "id": "post",
            "type": "http",
            "connection": "jira",
            "method": "POST",
            "path": "/hook",
            "json": {},
            "retry": {"max_attempts": 2, "initial_delay": 0},
        }
    ],
}
KEY = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}-post$")


async def test_keys_repeat_across_attempts_and_never_across_runs(kit, httpserver: HTTPServer) -> None:
    keys: list[str] = []
    answers = iter([503, 200, 200])

    def handler(request: Request) -> Response:
        keys.append(request.headers["Idempotency-Key"])
        return Response("{}", status=next(answers), content_type="application/json")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    project = await kit.project(
        jira_definition([CALL], slot_type="http"), [http_connection(httpserver.url_for("/").rstrip("/"))]
    )
    flow_id = kit.flow_id(project, "call")
    first_id = await kit.trigger(flow_id, {})
    assert (await kit.wait(first_id))["status"] == "succeeded"
    assert len(keys) == 2 and keys[0] == keys[1], keys  # a retry is the same operation
    assert KEY.match(keys[0]), keys[0]
    assert first_id not in keys[0].split("-")

    # A database reset: the run is gone and its id is handed out again.
    async with kit.app.state.context.sessions() as session:
        await session.execute(delete(StepRecord))
        await session.execute(delete(Run))
        # Neither database hands an id out twice by itself (SQLite: AUTOINCREMENT): restart the counters.
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text(f"ALTER SEQUENCE runs_id_seq RESTART WITH {first_id}"))
        else:
            await session.execute(text("DELETE FROM sqlite_sequence WHERE name = 'runs'"))
        await session.commit()
    second_id = await kit.trigger(flow_id, {})
    assert second_id == first_id
    assert (await kit.wait(second_id))["status"] == "succeeded"
    assert len(keys) == 3
    assert KEY.match(keys[2]) and keys[2] != keys[0]
