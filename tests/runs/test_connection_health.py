"""Connection health: POST /project/{id}/connection/{slot}/test against real targets on 127.0.0.1, what it
records, who may call it, and `last_used_at`'s once-a-minute write."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import httpx
import pytest
from flowkit import http_connection, jira_connection, jira_definition
from pytest_httpserver import HTTPServer
from sqlalchemy import select

from ihub.db.base import utcnow
from ihub.egress import EgressPolicy, egress_client
from ihub.flows.connections import ConnectionError_
from ihub.projects import health
from ihub.projects.models import Connection
from ihub.templates.connection_types import HTTP

pytestmark = pytest.mark.anyio

FLOW = {"key": "f", "trigger": {"type": "manual"}, "steps": [{"id": "out", "type": "respond", "body": "ok"}]}


def _test_url(project: dict[str, Any], slot: str = "jira") -> str:
    return f"/api/v1/project/{project['id']}/connection/{slot}/test"


async def _row(kit, project: dict[str, Any]) -> Connection:  # noqa: ANN001
    async with kit.app.state.context.sessions() as session:
        found = await session.scalar(select(Connection).where(Connection.project_id == int(project["id"])))
        assert found is not None
        return found


async def test_a_jira_connection_answering_200_is_connected(kit, httpserver: HTTPServer) -> None:  # noqa: ANN001
    httpserver.expect_oneshot_request("/rest/api/3/myself", method="GET").respond_with_json({"accountId": "a1"})
    project = await kit.project(jira_definition([FLOW]), [jira_connection(httpserver.url_for("/").rstrip("/"))])
    stamp = (await _row(kit, project)).updated_at

    response = await kit.client.post(_test_url(project), headers=kit.auth)

    assert response.status_code == 200, response.text
    (connection,) = response.json()["connections"]
    assert connection["id"] == "jira"
    assert connection["status"] == "connected" and connection["statusMessage"] is None
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"].startswith("Basic ")  # the step's auth preparation
    # A health change leaves the change stamp the engine's connection cache is keyed on alone.
    assert (await _row(kit, project)).updated_at == stamp


async def test_401_is_an_error_with_the_providers_message_and_never_the_secret(kit, httpserver: HTTPServer) -> None:  # noqa: ANN001
    token = "jira-api-token-123"
    httpserver.expect_oneshot_request("/rest/api/3/myself").respond_with_json(
        {"errorMessages": [f"Client must be authenticated ({token})"]}, status=401
    )
    project = await kit.project(
        jira_definition([FLOW]), [jira_connection(httpserver.url_for("/").rstrip("/"), token=token)]
    )

    response = await kit.client.post(_test_url(project), headers=kit.auth)

    assert response.status_code == 200, response.text
    (connection,) = response.json()["connections"]
    assert connection["status"] == "error"
    assert connection["statusMessage"] == "HTTP 401: Client must be authenticated ([redacted])"
    assert token not in response.text
    # The project read shows the same.
    shown = (await kit.client.get(f"/api/v1/project/{project['id']}", headers=kit.auth)).json()
    assert shown["projects"][0]["connections"][0]["status"] == "error"


async def test_a_refused_connection_is_an_error_and_a_later_success_clears_it(kit, httpserver: HTTPServer) -> None:  # noqa: ANN001
    with socket.socket() as probe:  # a port nothing listens on: connecting is refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    project = await kit.project(
        jira_definition([FLOW], slot_type="http"), [http_connection(f"http://127.0.0.1:{closed}", probePath="/ping")]
    )
    response = await kit.client.post(_test_url(project), headers=kit.auth)
    (connection,) = response.json()["connections"]
    assert connection["status"] == "error"
    assert connection["statusMessage"].startswith("cannot connect: ConnectError")

    httpserver.expect_oneshot_request("/ping", method="GET").respond_with_data("pong")
    changed = {"id": "jira", "details": {"type": "http", "baseUrl": httpserver.url_for("/").rstrip("/")}}
    assert (
        await kit.client.put(f"/api/v1/project/{project['id']}", json={"connections": [changed]}, headers=kit.auth)
    ).status_code == 200
    (connection,) = (await kit.client.post(_test_url(project), headers=kit.auth)).json()["connections"]
    assert connection["status"] == "connected" and connection["statusMessage"] is None


async def test_an_http_connection_without_a_probe_path_is_checked_with_a_head(kit, httpserver: HTTPServer) -> None:  # noqa: ANN001
    httpserver.expect_oneshot_request("/api", method="HEAD").respond_with_data("", status=404)
    project = await kit.project(
        jira_definition([FLOW], slot_type="http"), [http_connection(httpserver.url_for("/api"))]
    )
    (connection,) = (await kit.client.post(_test_url(project), headers=kit.auth)).json()["connections"]
    # Any answer but 401/403 from an API nobody described means the server is there and took the credentials.
    assert connection["status"] == "connected"
    assert [request.method for request, _ in httpserver.log] == ["HEAD"]


async def test_the_policy_refuses_a_probe_to_a_private_address_before_connecting() -> None:
    """The probe goes through the egress client a step uses: a refusal happens at the policy, no socket opened."""
    runtime = {"type": "http", "config": {"baseUrl": "http://10.1.2.3", "probePath": "/x"}, "secrets": {}}
    http = egress_client(EgressPolicy.from_entries([]))
    try:
        result = await health.probe_connection(http, runtime, HTTP.probe, 1024)
    finally:
        await http.aclose()
    assert result.status == health.ConnectionStatus.ERROR
    assert result.message is not None and result.message.startswith("not sent:")


async def test_needs_reconnect_from_the_auth_preparation(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*_: Any) -> Any:
        raise ConnectionError_("the grant was revoked", kind="needs_reconnect")

    monkeypatch.setattr(health, "prepare_auth", refused)
    runtime = {"type": "http", "config": {"baseUrl": "http://127.0.0.1:9"}, "secrets": {}}
    async with httpx.AsyncClient() as http:
        result = await health.probe_connection(http, runtime, HTTP.probe, 1024)
    assert (result.status, result.message) == (health.ConnectionStatus.NEEDS_RECONNECT, "the grant was revoked")


async def test_another_subtree_gets_404_and_nothing_is_recorded(kit, httpserver: HTTPServer) -> None:  # noqa: ANN001
    project = await kit.project(jira_definition([FLOW]), [jira_connection(httpserver.url_for("/").rstrip("/"))])
    stranger = await kit.login(await kit.org(), "Admin")
    response = await kit.client.post(_test_url(project), headers=stranger)
    assert response.status_code == 404, response.text
    assert httpserver.log == []
    assert (await _row(kit, project)).status == "connected"
    # Unknown slot and an unconfigured slot: refused, nothing sent.
    assert (await kit.client.post(_test_url(project, "nope"), headers=kit.auth)).status_code == 404
    empty = await kit.project(jira_definition([FLOW]))
    response = await kit.client.post(_test_url(empty), headers=kit.auth)
    assert response.status_code == 400 and "not configured" in response.text
    assert httpserver.log == []


async def test_last_used_is_written_at_most_once_a_minute(kit) -> None:  # noqa: ANN001
    project = await kit.project(jira_definition([FLOW], slot_type="http"), [http_connection("https://api.test")])
    now = utcnow()
    async with kit.app.state.context.sessions() as session:
        assert await health.record_used(session, int(project["id"]), "jira", now=now)
        assert not await health.record_used(session, int(project["id"]), "jira", now=now + timedelta(seconds=59))
        assert await health.record_used(session, int(project["id"]), "jira", now=now + timedelta(seconds=61))
        await session.commit()
    assert (await _row(kit, project)).last_used_at == now + timedelta(seconds=61)


async def test_the_cli_shows_each_connections_status(kit, tmp_path) -> None:  # noqa: ANN001
    import asyncio
    import json
    import os
    import subprocess
    import sys

    project = await kit.project(jira_definition([FLOW], slot_type="http"), [http_connection("https://api.test")])
    async with kit.app.state.context.sessions() as session:
        row = await session.scalar(select(Connection).where(Connection.project_id == int(project["id"])))
        assert row is not None
        await health.record_status(session, row.id, health.ConnectionStatus.NEEDS_RECONNECT, "invalid_grant")
        await session.commit()
    env = {
        **os.environ,
        "IHUB_DATABASE_URL": kit.app.state.context.settings.database_url,
        "IHUB_DATA_DIR": str(tmp_path / "cli-data"),
        "IHUB_SECRET_KEY": "cli-test-key-" + "y" * 32,
    }

    def ihub(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ihub", "project", "show", project["id"], *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    result = await asyncio.to_thread(ihub, "--json")
    assert result.returncode == 0, result.stderr
    (connection,) = json.loads(result.stdout)["connections"]
    assert (connection["id"], connection["status"], connection["statusMessage"]) == (
        "jira",
        "needs_reconnect",
        "invalid_grant",
    )
    human = await asyncio.to_thread(ihub)
    assert human.returncode == 0 and "needs_reconnect: invalid_grant" in human.stdout, human.stderr


async def test_a_slow_provider_does_not_hold_the_database_while_it_answers(kit, httpserver: HTTPServer) -> None:  # noqa: ANN001
    """The probe waits on the provider outside any transaction: on SQLite a write request held open across it
    would hold the only write lock, and every other write would wait for the provider."""
    import threading

    import anyio

    reached, release = threading.Event(), threading.Event()

    def slow(_request: Any) -> Any:
        from werkzeug import Response

        reached.set()
        release.wait(20)
        return Response('{"accountId": "a1"}', content_type="application/json")

    httpserver.expect_oneshot_request("/rest/api/3/myself").respond_with_handler(slow)
    project = await kit.project(jira_definition([FLOW]), [jira_connection(httpserver.url_for("/").rstrip("/"))])
    results: dict[str, httpx.Response] = {}

    async def check() -> None:
        results["check"] = await kit.client.post(_test_url(project), headers=kit.auth)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(check)
        while not reached.is_set():  # the probe reached the provider
            await anyio.sleep(0.05)
        # A write while the provider still has not answered: it must not wait for the probe.
        created = await kit.client.post("/api/v1/org", json={"name": "Meanwhile", "parentId": "1"}, headers=kit.auth)
        assert "check" not in results  # the probe is still waiting
        release.set()
    assert created.status_code == 200, created.text
    assert results["check"].status_code == 200 and results["check"].json()["connections"][0]["status"] == "connected"
