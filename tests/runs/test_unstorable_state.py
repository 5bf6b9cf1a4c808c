"""Runs whose state cannot be stored (numbers the JSON columns refuse or mangle, a delay past the calendar)
fail at once with a clear error, on the first execution, instead of being retried for hours."""

from __future__ import annotations

import pytest
from flowkit import http_connection, jira_definition
from pytest_httpserver import HTTPServer
from werkzeug import Response

from ihub.flows.storage import MAX_STORED_INT, unstorable

pytestmark = pytest.mark.anyio


def flow(key: str, *steps: dict) -> dict:
    return {"key": key, "trigger": "manual", "steps": list(steps)}


FLOWS = [
    flow("big-int", {"id": "m", "type": "map", "set": {"a": "{{ 2**70 }}"}}),
    flow("infinite", {"id": "m", "type": "map", "set": {"a": "{{ 1e308 * 10 }}"}}),
    flow("reply", {"id": "out", "type": "respond", "body": {"a": "{{ -(2**64) }}"}}),
    flow("far-delay", {"id": "d", "type": "delay", "seconds": "{{ 10**15 }}"}),
    flow("nan-delay", {"id": "d", "type": "delay", "seconds": "{{ 'nan' }}"}),
    flow("fetch", {"id": "get", "type": "http", "connection": "jira", "method": "GET", "path": "/big"}),
    flow(
        "continue",
        {"id": "m", "type": "map", "set": {"a": "{{ 2**70 }}"}, "on_error": "continue"},
        {"id": "out", "type": "respond", "body": {"after": "{{ steps.m.status }}"}},
    ),
    flow("edge", {"id": "out", "type": "respond", "body": {"max": MAX_STORED_INT, "min": -MAX_STORED_INT - 1}}),
]

EXPECTED = {
    "big-int": "integer beyond 64 bits",
    "infinite": "not finite",
    "reply": "integer beyond 64 bits",
    "far-delay": "between 0 and 604800",
    "nan-delay": "between 0 and 604800",
    "fetch": "not finite",
}


async def test_unstorable_runs_fail_on_their_first_execution(kit, httpserver: HTTPServer) -> None:
    # A target answering JSON the parser reads as Infinity.
    httpserver.expect_request("/big").respond_with_response(
        Response('{"n": 1e999}', status=200, content_type="application/json")
    )
    project = await kit.project(
        jira_definition(FLOWS, slot_type="http"), [http_connection(httpserver.url_for("/").rstrip("/"))]
    )
    for key, message in EXPECTED.items():
        run = await kit.wait(await kit.trigger(kit.flow_id(project, key), {}))
        assert run["status"] == "failed", (key, run)
        assert message in run["error"], (key, run["error"])
        assert run["attempt"] == 1, (key, run)
        assert run["nextAttemptAt"] is None
        assert run["steps"][-1]["status"] == "failed"

    # on_error: continue works as for any other failure.
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "continue"), {}))
    assert run["status"] == "succeeded", run
    assert run["result"]["body"] == {"after": "failed"}
    # The 64-bit edges themselves are stored and read back exactly.
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "edge"), {}))
    assert run["status"] == "succeeded", run
    assert run["result"]["body"] == {"max": MAX_STORED_INT, "min": -MAX_STORED_INT - 1}


def test_unstorable_finds_values_anywhere() -> None:
    assert unstorable({"a": [1, "x", None, True, {"b": 2.5}]}) is None
    assert unstorable({"a": [{"b": [float("nan")]}]}) is not None
    assert unstorable([2**63]) is not None
    assert unstorable(-(2**63)) is None
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert unstorable([deep, float("-inf")]) is not None


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_payloads_that_would_break_the_run_list_are_refused(kit) -> None:
    """A payload 300 deep used to be stored, then break GET /run and the project's whole run list (500)."""
    import json

    project = await kit.project(jira_definition([flow("echo", {"id": "m", "type": "map", "set": {"x": 1}})]))
    url = f"/api/v1/flow/{kit.flow_id(project, 'echo')}/run"
    headers = {**kit.auth, "Content-Type": "application/json"}
    for body, message in (
        (json.dumps({"b": nested(300)}), "nested deeper than 64"),
        (json.dumps({"b": nested(64)}), "nested deeper than 64"),
        ('{"n": NaN}', "not finite"),
        ('{"n": 1e999}', "not finite"),
        (json.dumps({"n": 2**64}), "beyond 64 bits"),
    ):
        response = await kit.client.post(url, content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert message in response.json()["metadata"]["message"]
    accepted = await kit.client.post(url, content=json.dumps(nested(63)), headers=headers)
    assert accepted.status_code == 202, accepted.text
    await kit.wait(accepted.json()["runId"])
    listed = await kit.client.get(f"/api/v1/project/{project['id']}/runs", headers=kit.auth)
    assert listed.status_code == 200, listed.text
    assert [r["id"] for r in listed.json()["runs"]] == [accepted.json()["runId"]]
