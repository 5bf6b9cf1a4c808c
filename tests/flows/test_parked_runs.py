"""Runs that wait for a reconnect: a step whose connection raises ConnectionError_ kind `needs_reconnect` parks
the run (`waiting_for_connection`) instead of failing it, and `mark_reconnected` resumes it.

The connection's auth preparation is made to raise the way the OAuth2 code does when a refresh is refused: the
http step's `prepare_auth` is wrapped, so everything else (the step, the engine, the executors) is the real one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flowkit import http_connection, jira_definition
from pytest_httpserver import HTTPServer
from sqlalchemy import update

from ihub.db.base import utcnow
from ihub.flows.connections import ConnectionError_
from ihub.flows.steps import http as http_step
from ihub.projects.health import mark_reconnected
from ihub.runs.models import Run

pytestmark = pytest.mark.anyio

REFUSED = "refresh token revoked by the provider (invalid_grant)"

FLOW = {
    "key": "two-calls",
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "first", "type": "http", "connection": "jira", "path": "/first"},
        {"id": "second", "type": "http", "connection": "jira", "path": "/second"},
        {"id": "reply", "type": "respond", "body": {"second": "{{ steps.second.output.n }}"}},
    ],
}


class Revocation:
    """While `revoked`, preparing the connection's auth for /second fails as a refused refresh does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.revoked = False
        self.prepared = 0
        real = http_step.prepare_auth

        async def prepare_auth(http: Any, tokens: Any, runtime: Any, url: str, limits: Any) -> Any:
            if self.revoked and url.endswith("/second"):
                raise ConnectionError_(REFUSED, kind="needs_reconnect")
            self.prepared += 1
            return await real(http, tokens, runtime, url, limits)

        monkeypatch.setattr(http_step, "prepare_auth", prepare_auth)


@pytest.fixture
def revocation(monkeypatch: pytest.MonkeyPatch) -> Revocation:
    return Revocation(monkeypatch)


async def _parked_run(kit, httpserver: HTTPServer, revocation: Revocation) -> tuple[dict[str, Any], str]:  # noqa: ANN001
    httpserver.expect_request("/first").respond_with_json({"n": 1})
    httpserver.expect_request("/second").respond_with_json({"n": 2})
    project = await kit.project(
        jira_definition([FLOW], slot_type="http"),
        [http_connection(httpserver.url_for("/").rstrip("/"), authType="bearer", token="access-token-1234")],
    )
    revocation.revoked = True
    run_id = await kit.trigger(kit.flow_id(project, "two-calls"), {})
    await kit.wait(run_id, statuses=("waiting_for_connection", "succeeded", "failed", "cancelled"))
    return project, run_id


def _calls(httpserver: HTTPServer, path: str) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == path)


async def _connection(kit, project: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    response = await kit.client.get(f"/api/v1/project/{project['id']}", headers=kit.auth)
    assert response.status_code == 200, response.text
    return next(c for c in response.json()["projects"][0]["connections"] if c["id"] == "jira")


async def test_needs_reconnect_parks_the_run_and_the_reconnect_resumes_it(
    kit, httpserver: HTTPServer, revocation: Revocation
) -> None:  # noqa: ANN001
    project, run_id = await _parked_run(kit, httpserver, revocation)
    run = await kit.run(run_id)

    assert run["status"] == "waiting_for_connection", run
    assert run["waitingForConnection"] == "jira"
    assert run["parkedUntil"] is not None and run["error"] is None and run["finishedAt"] is None
    steps = {s["path"]: s for s in run["steps"]}
    assert steps["first"]["status"] == "succeeded"
    assert steps["second"]["status"] == "parked"
    assert steps["second"]["error"] == REFUSED
    assert "reply" not in steps
    connection = await _connection(kit, project)
    assert connection["status"] == "needs_reconnect"
    assert connection["statusMessage"] == REFUSED
    assert connection["lastUsedAt"] is not None  # /first used it
    # The runs list shows the status and what it waits for, and filters on it.
    response = await kit.client.get(
        f"/api/v1/project/{project['id']}/runs", params={"status": "waiting_for_connection"}, headers=kit.auth
    )
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()["runs"]] == [run_id]
    assert response.json()["runs"][0]["waitingForConnection"] == "jira"

    # A person reconnects: the run resumes by itself, the parked step runs again, /first is not repeated.
    revocation.revoked = False
    context = kit.app.state.context
    async with context.sessions() as session:
        resumed = await mark_reconnected(session, int(project["id"]), "jira", context=context)
        await session.commit()
    assert resumed == [int(run_id)]
    run = await kit.wait(run_id)

    assert run["status"] == "succeeded", run
    assert run["result"]["body"] == {"second": 2}
    assert run["waitingForConnection"] is None and run["parkedUntil"] is None
    assert _calls(httpserver, "/first") == 1
    assert _calls(httpserver, "/second") == 1
    attempts = [(s["attempt"], s["status"]) for s in run["steps"] if s["path"] == "second"]
    # The default retry policy allows one attempt: succeeding after the parked one proves none was spent.
    assert attempts == [(1, "parked"), (2, "succeeded")]
    connection = await _connection(kit, project)
    assert connection["status"] == "connected"
    assert connection["statusMessage"] is None
    assert connection["lastRefreshedAt"] is not None


async def test_a_parked_run_past_its_wait_fails_with_a_clear_error(
    kit, httpserver: HTTPServer, revocation: Revocation
) -> None:  # noqa: ANN001
    _project, run_id = await _parked_run(kit, httpserver, revocation)
    assert (await kit.run(run_id))["status"] == "waiting_for_connection"

    # Time moves: the wait (72 h by default) ran out a day ago. The pollers that find due runs find it.
    async with kit.app.state.context.sessions() as session:
        await session.execute(
            update(Run).where(Run.id == int(run_id)).values(parked_until=utcnow() - timedelta(days=1))
        )
        await session.commit()
    run = await kit.wait(run_id, timeout=30)

    assert run["status"] == "failed", run
    assert run["error"] == "connection jira needed a reconnect for 72 h; reconnect it and replay this run"
    assert _calls(httpserver, "/second") == 0
    assert [s["status"] for s in run["steps"] if s["path"] == "second"] == ["parked"]


async def test_a_parked_run_can_be_cancelled_and_a_reconnect_then_resumes_nothing(
    kit, httpserver: HTTPServer, revocation: Revocation
) -> None:  # noqa: ANN001
    project, run_id = await _parked_run(kit, httpserver, revocation)
    response = await kit.client.post(f"/api/v1/run/{run_id}/cancel", headers=kit.auth)
    assert response.status_code == 200, response.text
    assert response.json()["runs"][0]["status"] == "cancelled"

    async with kit.app.state.context.sessions() as session:
        assert await mark_reconnected(session, int(project["id"]), "jira") == []
        await session.commit()
    assert (await kit.run(run_id))["status"] == "cancelled"
    assert _calls(httpserver, "/second") == 0
