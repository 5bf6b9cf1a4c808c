"""Run and connection events from the engine: a run that parks on a connection needing a reconnect emits
`run.parked` and `connection.needs_reconnect` (once, on the change); the resumed run's `run.succeeded` reaches
only endpoints that opted in."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from event_receiver import received, verify, wait_for
from flowkit import Kit, http_connection, jira_definition
from pytest_httpserver import HTTPServer

from ihub.flows.connections import ConnectionError_
from ihub.flows.steps import http as http_step
from ihub.projects.health import mark_reconnected

pytestmark = pytest.mark.anyio

REFUSED = "refresh token revoked by the provider (invalid_grant)"
FLOW = {
    "key": "call",
    "trigger": {"type": "manual"},
    "steps": [{"id": "second", "type": "http", "connection": "jira", "path": "/second"}],
}


async def test_parked_resumed_and_succeeded_runs_emit_their_events(
    kit: Kit, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    revoked = {"now": True}
    real = http_step.prepare_auth

    async def prepare_auth(http: Any, tokens: Any, runtime: Any, url: str, limits: Any) -> Any:
        # As the OAuth2 code raises when the provider refuses a refresh.
        if revoked["now"]:
            raise ConnectionError_(REFUSED, kind="needs_reconnect")
        return await real(http, tokens, runtime, url, limits)

    monkeypatch.setattr(http_step, "prepare_auth", prepare_auth)
    httpserver.expect_request("/second").respond_with_json({"n": 2})
    httpserver.expect_request("/all").respond_with_data("", status=200)
    httpserver.expect_request("/default").respond_with_data("", status=200)
    types = ["run.parked", "connection.needs_reconnect", "run.succeeded"]
    response = await client.post(
        "/api/v1/event-endpoint/org/1", json={"url": httpserver.url_for("/all"), "eventTypes": types}, headers=auth
    )
    every = response.json()["endpoints"][0]
    response = await client.post(
        "/api/v1/event-endpoint/org/1", json={"url": httpserver.url_for("/default")}, headers=auth
    )
    default = response.json()["endpoints"][0]
    assert "run.succeeded" not in default["eventTypes"]

    project = await kit.project(
        jira_definition([FLOW], slot_type="http"),
        [http_connection(httpserver.url_for("/").rstrip("/"), authType="bearer", token="access-token-1234")],
    )
    run_id = await kit.trigger(kit.flow_id(project, "call"), {})
    await kit.wait(run_id, statuses=("waiting_for_connection",))

    def types_at(path: str, secret: str, at_least: int) -> list[dict[str, Any]]:
        events = [verify(secret, r.headers, r.get_data()) for r in received(httpserver, path)]
        return events if len(events) >= at_least else []

    parked = {e["type"]: e["data"] for e in await wait_for(lambda: types_at("/all", every["secret"], 2))}
    assert parked["run.parked"]["runId"] == run_id and parked["run.parked"]["connection"] == "jira"
    assert parked["run.parked"]["reason"] == REFUSED and parked["run.parked"]["status"] == "waiting_for_connection"
    assert parked["connection.needs_reconnect"]["connection"] == "jira"
    assert parked["connection.needs_reconnect"]["projectId"] == project["id"]
    assert "access-token-1234" not in str(parked)

    revoked["now"] = False
    context = kit.app.state.context
    async with context.sessions() as session:
        await mark_reconnected(session, int(project["id"]), "jira", context=context)
        await session.commit()
    assert (await kit.wait(run_id))["status"] == "succeeded"
    events = await wait_for(lambda: types_at("/all", every["secret"], 3))
    assert [e["type"] for e in events].count("run.succeeded") == 1
    assert [e["data"]["runId"] for e in events if e["type"] == "run.succeeded"] == [run_id]
    # The default subscription: the parked run and the connection, never the opt-in success.
    default_types = sorted(e["type"] for e in await wait_for(lambda: types_at("/default", default["secret"], 3)))
    assert default_types == ["connection.needs_reconnect", "project.created", "run.parked"]
