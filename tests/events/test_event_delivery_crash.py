"""The outbox survives a crash: events committed by a hub that is SIGKILLed before delivering them arrive
after a restart, each under one webhook-id, exactly once with a 2xx (a real `ihub serve`, SQLite)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from event_receiver import received, verify
from pytest_httpserver import HTTPServer

pytestmark = pytest.mark.slow


def api_token(hub: Any) -> dict[str, str]:
    nonce = str(uuid.uuid1())
    digest = hashlib.sha256((hub.secret + nonce).encode()).hexdigest()
    response = httpx.post(f"{hub.url}/api/v1/token", json={"userId": hub.user_id, "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text
    return {"Authorization": response.json()["tokens"][0]["token"]}


def serve_again(hub: Any, tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """`ihub serve` on the same data directory and port, as an operator restarts it after a crash."""
    log = open(tmp_path / "hub-restarted.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "ihub", "serve"], env={**hub.env, **env}, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(hub.url + "/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert process.poll() is None, (tmp_path / "hub-restarted.log").read_text()
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the restarted hub did not answer")


def wait_until(condition: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_events_committed_before_a_crash_are_delivered_once_per_id_after_restart(
    start_live_hub: Any, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/target").respond_with_data("down", status=500)
    # The first hub commits events but sends none (its deliverer is off): it dies between commit and delivery.
    hub = start_live_hub(extra_env={"IHUB_EVENT_DELIVERY": "false"})
    auth = api_token(hub)
    response = httpx.post(
        f"{hub.url}/api/v1/event-endpoint/org/1", json={"url": httpserver.url_for("/hook")}, headers=auth
    )
    assert response.status_code == 200, response.text
    endpoint = response.json()["endpoints"][0]
    users = [{"name": f"U{i}", "email": f"u{i}-{uuid.uuid4().hex[:6]}@example.com", "role": "Member"} for i in range(3)]
    response = httpx.post(f"{hub.url}/api/v1/user/org/1", json=users, headers=auth)
    assert response.status_code == 200, response.text
    user_ids = {user["id"] for user in response.json()["users"]}
    # A run failing in a worker process: its run.failed is committed there, with the run's final status.
    step = {"id": "call", "type": "http", "method": "POST", "url": httpserver.url_for("/target")}
    definition = {"connections": [], "flows": [{"key": "f", "trigger": "manual", "steps": [step]}]}
    body = {"name": "crash", "description": "", "definition": definition}
    response = httpx.post(f"{hub.url}/api/v1/template/org/1", json=body, headers=auth)
    assert response.status_code == 200, response.text
    body = {"name": "crash", "templateId": response.json()["templates"][0]["id"]}
    response = httpx.post(f"{hub.url}/api/v1/project/org/1", json=body, headers=auth)
    assert response.status_code == 200, response.text
    flow_id = response.json()["projects"][0]["flows"][0]["id"]
    response = httpx.post(f"{hub.url}/api/v1/flow/{flow_id}/run", json={}, headers=auth)
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]

    def failed() -> bool:
        answer = httpx.get(f"{hub.url}/api/v1/run/{run_id}", headers=auth)
        return bool(answer.json()["runs"][0]["status"] == "failed")

    wait_until(failed)
    hub.process.kill()  # SIGKILL: no shutdown hook runs
    hub.process.wait(timeout=30)
    assert received(httpserver, "/hook") == []

    # After the restart the receiver refuses the first request once (a 503): that event is retried, same id.
    httpserver.expect_oneshot_request("/hook").respond_with_data("busy", status=503)
    httpserver.expect_request("/hook").respond_with_data("", status=204)
    restarted = serve_again(hub, tmp_path, IHUB_EVENT_DELIVERY="true", IHUB_EVENT_RETRY_BASE_SECONDS="0.2")
    try:
        expected = 1 + 3 + 1  # project.created, 3 x user.created, run.failed

        def accepted() -> list[tuple[str, dict[str, Any]]]:
            ok = [
                (request.headers["webhook-id"], verify(endpoint["secret"], request.headers, request.get_data()))
                for request, answer in httpserver.log
                if request.path == "/hook" and answer.status_code == 204
            ]
            return ok if len(ok) >= expected else []

        events = wait_until(accepted)
        time.sleep(1.0)  # anything sent twice would arrive by now (retries are 0.2 s apart)
        events = accepted()
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)

    # Each id was accepted exactly once, and each event has exactly one id.
    assert Counter(message_id for message_id, _ in events).most_common(1)[0][1] == 1
    kinds = Counter(event["type"] for _, event in events)
    assert kinds == {"user.created": 3, "project.created": 1, "run.failed": 1}
    assert {event["data"]["userId"] for _, event in events if event["type"] == "user.created"} == user_ids
    [failure] = [event for _, event in events if event["type"] == "run.failed"]
    assert failure["data"]["runId"] == run_id and failure["data"]["status"] == "failed"
    # The refused attempt was retried under its own id: every id seen at all was accepted.
    seen = {request.headers["webhook-id"] for request in received(httpserver, "/hook")}
    assert seen == {message_id for message_id, _ in events}
    assert json.dumps(events).count(endpoint["secret"]) == 0
