"""A run's project settings and connections come from a per-process cache (projects/runtime.py) that is checked
against the project's change stamp on every load: repeated runs skip the per-slot reads and the decryption, and
a run started after a change always sees the change, with nothing to wait for."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flowkit import Kit, jira_connection, jira_definition
from pytest_httpserver import HTTPServer
from sqlalchemy import select

pytestmark = pytest.mark.anyio

FLOW = {
    "key": "call",
    "trigger": "manual",
    "steps": [
        {
            "id": "call",
            "type": "http",
            "connection": "jira",
            "path": "/hit",
            "headers": {"X-Label": "{{ config.label }}"},
        }
    ],
}


def basic(email: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()


async def run(kit: Kit, project: dict[str, Any]) -> None:
    done = await kit.wait(await kit.trigger(kit.flow_id(project, "call"), {}))
    assert done["status"] == "succeeded", done


async def test_repeated_runs_reuse_the_project_and_see_every_change(
    kit: Kit, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ihub.projects import runtime

    builds: list[str] = []
    real = runtime.connection_runtime

    async def counting(session: Any, box: Any, project_id: int, slot: str) -> dict[str, Any]:
        builds.append(slot)
        return await real(session, box, project_id, slot)

    monkeypatch.setattr(runtime, "connection_runtime", counting)
    httpserver.expect_request("/hit").respond_with_json({"ok": True})
    url = httpserver.url_for("/")
    project = await kit.project(
        jira_definition([FLOW]), [jira_connection(url, token="first-token")], settings={"label": "one"}
    )

    await run(kit, project)
    await run(kit, project)
    assert builds == ["jira"], "the second run read and decrypted the connection again"
    seen = [(r.headers["Authorization"], r.headers["X-Label"]) for r, _ in httpserver.log]
    assert seen == [(basic("bot@acme.test", "first-token"), "one")] * 2

    # A new secret through the API: the very next run sends it.
    response = await kit.client.put(
        f"/api/v1/project/{project['id']}",
        json={"connections": [jira_connection(url, token="second-token")]},
        headers=kit.auth,
    )
    assert response.status_code == 200, response.text
    await run(kit, project)
    assert httpserver.log[-1][0].headers["Authorization"] == basic("bot@acme.test", "second-token")

    # A change of the connection row alone (another node, the shell): the very next run sees it too.
    from ihub.projects.models import Connection

    async with kit.app.state.context.sessions() as session:
        connection = await session.scalar(select(Connection).where(Connection.project_id == int(project["id"])))
        assert connection is not None and connection.config["email"] == "bot@acme.test"
        connection.config = {**connection.config, "email": "other@acme.test"}
        await session.commit()
    await run(kit, project)
    assert httpserver.log[-1][0].headers["Authorization"] == basic("other@acme.test", "second-token")

    # New settings: the very next run sees them.
    await kit.set_settings(int(project["id"]), {"label": "two"})
    await run(kit, project)
    assert httpserver.log[-1][0].headers["X-Label"] == "two"
    assert builds == ["jira"] * 4
