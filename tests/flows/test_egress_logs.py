"""Nothing from a connection reaches a log line, at any level: not the outgoing URL (an API key in its
query string, a Slack webhook URL that is the whole credential), not its headers or body."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

import httpx
import pytest
from flowkit import http_connection, jira_definition
from pytest_httpserver import HTTPServer

pytestmark = pytest.mark.anyio

SLACK_PATH = "/services/T0EGRESS/B0EGRESS/slackWebhookSecret0123"
API_KEY = "qkey-never-logged-4567"
BEARER_IN_BODY = "body-secret-never-logged-89"


def leaky_flow() -> dict[str, Any]:
    return {
        "key": "f",
        "trigger": "manual",
        "steps": [
            {
                "id": "notify",
                "type": "http",
                "connection": "jira",
                "method": "POST",
                "json": {"text": "deploy done", "token": BEARER_IN_BODY},
                "headers": {"X-Extra": BEARER_IN_BODY},
            }
        ],
    }


def leaky_connection(base: str) -> dict[str, Any]:
    return http_connection(base + SLACK_PATH, authType="api_key", apiKey=API_KEY, apiKeyName="key", apiKeyIn="query")


def assert_nothing_leaked(text: str) -> None:
    for secret in (SLACK_PATH.rsplit("/", 1)[1], API_KEY, BEARER_IN_BODY):
        assert secret not in text, f"{secret} reached a log line"


async def test_in_process_logs_at_debug(kit: Any, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    httpserver.expect_request(SLACK_PATH).respond_with_data("ok")
    caplog.set_level(logging.DEBUG)
    project = await kit.project(
        jira_definition([leaky_flow()], slot_type="http"), [leaky_connection(f"http://127.0.0.1:{httpserver.port}")]
    )
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}))
    assert run["status"] == "succeeded", run
    request, _ = httpserver.log[0]
    assert request.args["key"] == API_KEY  # the call did carry the secrets
    # werkzeug is the stand-in target's own access log, not ihub's.
    ours = [r for r in caplog.records if not r.name.startswith("werkzeug")]
    assert_nothing_leaked("\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in ours))


def login(hub: Any) -> httpx.Client:
    http = httpx.Client(base_url=hub.url, timeout=10)
    nonce = uuid.uuid4().hex
    digest = hashlib.sha256((hub.secret + nonce).encode()).hexdigest()
    response = http.post("/api/v1/token", json={"userId": hub.user_id, "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text
    http.headers["Authorization"] = response.json()["tokens"][0]["token"]
    return http


@pytest.mark.slow
def test_ihub_serve_log_at_debug(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, httpserver: HTTPServer, tmp_path: Any
) -> None:
    """The operator's view: `ihub serve` with IHUB_LOG_LEVEL=DEBUG, its whole log file read back."""
    monkeypatch.setenv("IHUB_LOG_LEVEL", "DEBUG")
    hub = request.getfixturevalue("live_hub")
    httpserver.expect_request(SLACK_PATH).respond_with_data("ok")
    http = login(hub)
    body = {"name": "t-logs", "description": "", "definition": jira_definition([leaky_flow()], slot_type="http")}
    response = http.post("/api/v1/template/org/1", json=body)
    assert response.status_code == 200, response.text
    body = {"name": "p-logs", "templateId": response.json()["templates"][0]["id"]}
    response = http.post("/api/v1/project/org/1", json=body)
    assert response.status_code == 200, response.text
    project = response.json()["projects"][0]
    connection = leaky_connection(f"http://127.0.0.1:{httpserver.port}")
    response = http.put(f"/api/v1/project/{project['id']}", json={"connections": [connection]})
    assert response.status_code == 200, response.text
    response = http.post(f"/api/v1/flow/{project['flows'][0]['id']}/run", json={})
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]
    for _ in range(300):
        run = http.get(f"/api/v1/run/{run_id}").json()["runs"][0]
        if run["status"] in ("succeeded", "failed"):
            break
        __import__("time").sleep(0.1)
    assert run["status"] == "succeeded", run
    assert httpserver.log, "the target was called"
    log = (tmp_path / "hub.log").read_text()
    assert "DEBUG" in log.upper() or len(log.splitlines()) > 3  # the log was written, at the level asked
    assert_nothing_leaked(log)
