"""Issue 11's "done means", as an operator lives it on the day something breaks: a connection is changed to a
wrong token, the flow using it starts failing; Prometheus sees the failures, a signed `run.failed` event
arrives, the failure inbox shows one group, the audit log says who changed the connection; the connection is
fixed, the group is replayed in bulk (dry run first), and every replay succeeds without duplicates."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ihub.config import Settings
from metrics_kit import runs_finished

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "journey-" + "m" * 24
GOOD, WRONG = "crm-token-" + uuid.uuid4().hex, "crm-token-typo-" + uuid.uuid4().hex


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_token": METRICS_TOKEN})


def definition(flow_key: str) -> dict[str, Any]:
    return {
        "connections": [{"id": "crm", "type": "http", "name": "CRM"}],
        "flows": [
            {
                "key": flow_key,
                "trigger": "manual",
                "steps": [
                    {"id": "push", "type": "http", "connection": "crm", "method": "POST", "path": "/contacts"},
                ],
            }
        ],
    }


def crm(token: str, base: str) -> list[dict[str, Any]]:
    return [{"id": "crm", "details": {"type": "http", "baseUrl": base, "authType": "bearer", "token": token}}]


async def until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll until `condition()` (sync or async) is truthy: a loaded machine is slow, not wrong."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_a_broken_connection_from_alert_to_replay(
    client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    def contacts(request: Request) -> Response:
        authorized = request.headers.get("Authorization") == f"Bearer {GOOD}"
        return Response('{"id": 1}' if authorized else "unauthorized", status=201 if authorized else 401)

    httpserver.expect_request("/contacts", method="POST").respond_with_handler(contacts)
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    base = httpserver.url_for("").rstrip("/")
    flow_key = f"sync-{uuid.uuid4().hex[:6]}"

    async def call(method: str, url: str, body: Any = None, status: int = 200) -> Any:
        response = await client.request(method, url, json=body, headers=auth)
        assert response.status_code == status, response.text
        return response.json()

    # The operator subscribes to failures; the vendor's template and a customer's working project exist.
    endpoint = (
        await call("POST", "/api/v1/event-endpoint/org/1", {"url": base + "/hook", "eventTypes": ["run.failed"]})
    )["endpoints"][0]
    template = await call("POST", "/api/v1/template/org/1", {"name": flow_key, "definition": definition(flow_key)})
    body = {"name": flow_key, "templateId": template["templates"][0]["id"]}
    project = (await call("POST", "/api/v1/project/org/1", body))["projects"][0]
    await call("PUT", f"/api/v1/project/{project['id']}", {"connections": crm(GOOD, base)})
    flow_id = project["flows"][0]["id"]

    # Someone pastes a wrong token; from then on every run fails at `push` with a 401.
    await call("PUT", f"/api/v1/project/{project['id']}", {"connections": crm(WRONG, base)})
    metric_before = await runs_finished(client, METRICS_TOKEN, flow_key, "failed")
    failed = [(await call("POST", f"/api/v1/flow/{flow_id}/run", {"n": n}, 202))["runId"] for n in range(3)]

    async def all_failed() -> bool:
        runs = [(await call("GET", f"/api/v1/run/{run_id}"))["runs"][0] for run_id in failed]
        return all(run["status"] == "failed" for run in runs)

    await until(all_failed)

    # Prometheus sees them.
    assert await runs_finished(client, METRICS_TOKEN, flow_key, "failed") - metric_before == 3
    # A signed run.failed event per run reaches the receiver (the signature is checked by tests/events).
    hooks = await until(lambda: len([r for r, _ in httpserver.log if r.path == "/hook"]) >= 3 and httpserver.log)
    events = [r.get_json() for r, _ in hooks if r.path == "/hook"]
    assert sorted(event["data"]["runId"] for event in events) == sorted(failed)
    assert all(r.headers["webhook-signature"].startswith("v1,") for r, _ in hooks if r.path == "/hook")
    assert endpoint["secret"].startswith("whsec_")

    # The inbox shows one group for the three, at the failing step.
    groups = (await call("GET", "/api/v1/org/1/failures", None))["failures"]
    [group] = [g for g in groups if g["flowKey"] == flow_key]
    assert group["count"] == 3 and group["step"] == "push" and "401" in group["signature"]

    # The audit log says who changed the connection, without the token.
    entries = (await call("GET", "/api/v1/audit", None))["entries"]
    changes = [e for e in entries if e["action"] == "PUT /api/v1/project/{project_id}"]
    assert changes and changes[0]["channel"] == "api" and changes[0]["actor"]["userId"] == "1"
    assert WRONG not in str(entries) and GOOD not in str(entries)

    # The fix, then a dry run of the group's replay, then the replay itself.
    await call("PUT", f"/api/v1/project/{project['id']}", {"connections": crm(GOOD, base)})
    selection = {"failureKey": group["key"], "version": "current"}
    preview = await call("POST", "/api/v1/org/1/replays", {**selection, "dryRun": True})
    assert (preview["selected"], preview["toReplay"]) == (3, 3)
    batch = (await call("POST", "/api/v1/org/1/replays", selection, 202))["replays"][0]

    async def batch_done() -> dict[str, Any] | None:
        shown = (await call("GET", f"/api/v1/replays/{batch['id']}"))["replays"][0]
        return shown if shown["status"] == "done" else None

    await until(batch_done)
    runs = (await call("GET", f"/api/v1/project/{project['id']}/runs", None))["runs"]
    replays = [run for run in runs if run.get("replayOf") in failed]
    assert sorted(run["replayOf"] for run in replays) == sorted(failed)  # each once
    await until(lambda: all_succeeded(call, [run["id"] for run in replays]))


async def all_succeeded(call: Any, run_ids: list[str]) -> bool:
    runs = [(await call("GET", f"/api/v1/run/{run_id}"))["runs"][0] for run_id in run_ids]
    return all(run["status"] == "succeeded" for run in runs)
