"""The flow engine end to end: API trigger → local executor → a real HTTP target (pytest-httpserver)."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from flowkit import http_connection, jira_connection, jira_definition, servicenow_to_jira_flow
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

pytestmark = pytest.mark.anyio

INCIDENT = {"issueKey": "INC0010042", "summary": "Mail server down", "description": "Users cannot send mail."}


async def test_servicenow_payload_creates_jira_issue(kit, httpserver: HTTPServer, executor_kind: str) -> None:
    httpserver.expect_oneshot_request("/rest/api/3/issue", method="POST").respond_with_json(
        {"id": "10001", "key": "OPS-17", "self": "x"}, status=201
    )
    project = await kit.project(
        jira_definition([servicenow_to_jira_flow()]),
        [jira_connection(httpserver.url_for("/").rstrip("/"))],
        settings={"jiraProject": "OPS"},
    )
    run_id = await kit.trigger(kit.flow_id(project, "create-issue"), INCIDENT)
    run = await kit.wait(run_id)

    assert run["status"] == "succeeded", run
    assert run["worker"].startswith("local-") == (executor_kind == "local")
    assert run["result"] == {"status": 201, "body": {"jiraKey": "OPS-17", "source": "INC0010042"}}
    request, _ = httpserver.log[0]
    assert request.get_json() == {
        "fields": {
            "project": {"key": "OPS"},
            "issuetype": {"name": "Task"},
            "summary": "[INC0010042] Mail server down",
            "description": "Users cannot send mail.",
            "labels": ["servicenow", "inc0010042"],
        }
    }
    expected = base64.b64encode(b"bot@acme.test:jira-api-token-123").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert re.fullmatch(r"[0-9a-f-]{36}-create", request.headers["Idempotency-Key"])  # <run uid>-<step path>
    # Step records: the secret never appears in what the API shows.
    steps = {s["path"]: s for s in run["steps"]}
    assert steps["create"]["status"] == "succeeded"
    assert steps["create"]["response"]["status"] == 201
    assert steps["create"]["request"]["headers"]["Authorization"] == "[redacted]"
    assert "jira-api-token-123" not in json.dumps(run)
    assert expected not in json.dumps(run)
    assert steps["reply"]["status"] == "succeeded"


def _flaky(failures: int, times: list[float]):  # noqa: ANN202
    def handler(request: Request) -> Response:
        times.append(time.monotonic())
        if len(times) <= failures:
            return Response("busy", status=503)
        return Response(json.dumps({"key": "OPS-1"}), status=201, content_type="application/json")

    return handler


async def test_retries_with_growing_delays_then_succeeds(kit, httpserver: HTTPServer) -> None:
    times: list[float] = []
    httpserver.expect_request("/rest/api/3/issue").respond_with_handler(_flaky(2, times))
    retry = {"max_attempts": 4, "initial_delay": 0.2, "multiplier": 3, "max_delay": 5}
    flow = servicenow_to_jira_flow()
    flow["steps"][0]["retry"] = retry
    project = await kit.project(jira_definition([flow]), [jira_connection(httpserver.url_for("/").rstrip("/"))])
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "create-issue"), INCIDENT))

    assert run["status"] == "succeeded", run
    assert len(times) == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert first_gap >= 0.2
    assert second_gap >= 0.6
    assert second_gap > first_gap
    attempts = [s for s in run["steps"] if s["path"] == "create"]
    assert [s["status"] for s in attempts] == ["retrying", "retrying", "succeeded"]
    assert [s["attempt"] for s in attempts] == [1, 2, 3]
    assert run["attempt"] == 3  # the run was released between attempts, not held by a worker


async def test_always_failing_target_fails_after_max_attempts(kit, httpserver: HTTPServer) -> None:
    times: list[float] = []
    httpserver.expect_request("/rest/api/3/issue").respond_with_handler(_flaky(100, times))
    flow = servicenow_to_jira_flow()
    flow["steps"][0]["retry"] = {"max_attempts": 3, "initial_delay": 0.05, "max_delay": 0.1}
    project = await kit.project(jira_definition([flow]), [jira_connection(httpserver.url_for("/").rstrip("/"))])
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "create-issue"), INCIDENT))

    assert run["status"] == "failed"
    assert len(times) == 3
    assert "step create" in run["error"] and "HTTP 503" in run["error"]
    attempts = [s for s in run["steps"] if s["path"] == "create"]
    assert [s["status"] for s in attempts] == ["retrying", "retrying", "failed"]
    assert attempts[-1]["error"].startswith("HTTP 503")
    assert attempts[-1]["response"]["body"] == "busy"
    assert not any(s["path"] == "reply" for s in run["steps"])
    assert run["result"] is None


async def test_non_retryable_status_fails_at_once(kit, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/rest/api/3/issue").respond_with_json({"errors": {"summary": "bad"}}, status=400)
    flow = servicenow_to_jira_flow()
    flow["steps"][0]["retry"] = {"max_attempts": 5, "initial_delay": 0.05}
    project = await kit.project(jira_definition([flow]), [jira_connection(httpserver.url_for("/").rstrip("/"))])
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "create-issue"), INCIDENT))
    assert run["status"] == "failed"
    assert len(httpserver.log) == 1


async def test_on_error_continue(kit, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_data("nope", status=500)
    httpserver.expect_request("/b").respond_with_json({"ok": True})
    flow = {
        "key": "f",
        "trigger": "manual",
        "steps": [
            {"id": "a", "type": "http", "connection": "jira", "path": "/a", "on_error": "continue"},
            {"id": "b", "type": "http", "connection": "jira", "path": "/b"},
            {
                "id": "out",
                "type": "respond",
                "body": {
                    "a": "{{ steps.a.status }}",
                    "aStatus": "{{ steps.a.response.status }}",
                    "b": "{{ steps.b.output.ok }}",
                },
            },
        ],
    }
    project = await kit.project(jira_definition([flow], slot_type="http"), [http_connection(httpserver.url_for("/"))])
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}))
    assert run["status"] == "succeeded", run
    assert run["result"]["body"] == {"a": "failed", "aStatus": 500, "b": True}


async def test_if_and_foreach_branches(kit, httpserver: HTTPServer) -> None:
    seen: list[dict] = []

    def record(request: Request) -> Response:
        seen.append(request.get_json())
        return Response(json.dumps({"id": len(seen)}), status=200, content_type="application/json")

    httpserver.expect_request("/items", method="POST").respond_with_handler(record)
    flow = {
        "key": "f",
        "trigger": "manual",
        "steps": [
            {
                "id": "prep",
                "type": "map",
                "set": {"items": "{{ trigger.body.items }}", "n": "{{ trigger.body.items | length }}"},
            },
            {
                "id": "check",
                "type": "if",
                "condition": "vars.n > 2",
                "then": [{"id": "many", "type": "map", "set": {"size": "many"}}],
                "else": [{"id": "few", "type": "map", "set": {"size": "few"}}],
            },
            {
                "id": "each",
                "type": "foreach",
                "items": "vars['items']",
                "as": "entry",
                "concurrency": 2,
                "steps": [
                    {
                        "id": "post",
                        "type": "http",
                        "connection": "jira",
                        "method": "POST",
                        "path": "/items",
                        "json": {"name": "{{ entry.name }}", "index": "{{ loop.index }}", "size": "{{ vars.size }}"},
                    }
                ],
            },
            {
                "id": "out",
                "type": "respond",
                "body": {"size": "{{ vars.size }}", "count": "{{ steps.each.output | length }}"},
            },
        ],
    }
    project = await kit.project(jira_definition([flow], slot_type="http"), [http_connection(httpserver.url_for("/"))])
    flow_id = kit.flow_id(project, "f")

    run = await kit.wait(await kit.trigger(flow_id, {"items": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}))
    assert run["status"] == "succeeded", run
    assert run["result"]["body"] == {"size": "many", "count": 3}
    assert sorted((s["name"], s["index"], s["size"]) for s in seen) == [
        ("a", 0, "many"),
        ("b", 1, "many"),
        ("c", 2, "many"),
    ]
    paths = {s["path"] for s in run["steps"]}
    assert {"check.then.many", "each[0].post", "each[1].post", "each[2].post", "each"} <= paths
    assert "check.else.few" not in paths
    keys = {s["path"]: s["request"]["headers"].get("Idempotency-Key") for s in run["steps"] if s["type"] == "http"}
    assert re.fullmatch(r"[0-9a-f-]{36}-each\[1\]\.post", keys["each[1].post"])
    assert keys["each[0].post"][:36] == keys["each[1].post"][:36]

    seen.clear()
    run = await kit.wait(await kit.trigger(flow_id, {"items": [{"name": "x"}]}))
    assert run["result"]["body"] == {"size": "few", "count": 1}
    assert {s["path"] for s in run["steps"]} >= {"check.else.few"}


async def test_expression_error_names_the_step(kit) -> None:
    flow = {
        "key": "f",
        "trigger": "manual",
        "steps": [
            {"id": "ok", "type": "map", "set": {"a": 1}},
            {"id": "broken", "type": "map", "set": {"x": "{{ trigger.body.missing.deeper }}"}},
        ],
    }
    project = await kit.project(jira_definition([flow], slot_type="http"))
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {"a": 1}))
    assert run["status"] == "failed"
    assert run["error"].startswith("step broken: expression error")
    assert "missing" in run["error"]
    failed = [s for s in run["steps"] if s["path"] == "broken"]
    assert failed[0]["status"] == "failed"


async def test_fail_step_and_typed_values(kit) -> None:
    flow = {
        "key": "f",
        "trigger": "manual",
        "steps": [
            {
                "id": "m",
                "type": "map",
                "set": {
                    "obj": "{{ trigger.body }}",
                    "text": "n={{ trigger.body.n }}",
                    "items": "{{ trigger.body.items }}",
                },
            },
            {
                "id": "gate",
                "type": "if",
                "condition": "trigger.body.n > 5",
                "then": [{"id": "stop", "type": "fail", "message": "n too big: {{ trigger.body.n }}"}],
            },
            {"id": "out", "type": "respond", "status": 202, "body": "{{ vars }}"},
        ],
    }
    project = await kit.project(jira_definition([flow], slot_type="http"))
    flow_id = kit.flow_id(project, "f")
    run = await kit.wait(await kit.trigger(flow_id, {"n": 3, "items": [1, 2]}))
    assert run["status"] == "succeeded", run
    # `items` is the body's key, not the dict method; single expressions keep their JSON types.
    assert run["result"] == {"status": 202, "body": {"obj": {"n": 3, "items": [1, 2]}, "text": "n=3", "items": [1, 2]}}
    run = await kit.wait(await kit.trigger(flow_id, {"n": 9, "items": []}))
    assert run["status"] == "failed"
    assert run["error"] == "step gate.then.stop: n too big: 9"


async def test_foreach_respects_its_concurrency_limit(kit) -> None:
    import threading

    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def slow(request: Request) -> Response:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.15)
        with lock:
            in_flight[0] -= 1
        return Response("{}", status=200, content_type="application/json")

    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.expect_request("/slow").respond_with_handler(slow)
    server.start()
    try:
        flow = {
            "key": "f",
            "trigger": "manual",
            "steps": [
                {
                    "id": "each",
                    "type": "foreach",
                    "items": "trigger.body.items",
                    "concurrency": 3,
                    "steps": [{"id": "call", "type": "http", "connection": "jira", "path": "/slow"}],
                }
            ],
        }
        project = await kit.project(jira_definition([flow], slot_type="http"), [http_connection(server.url_for("/"))])
        started = time.monotonic()
        run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {"items": list(range(9))}))
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert run["status"] == "succeeded", run
    assert peak[0] == 3
    assert elapsed >= 0.45  # 9 calls, 3 at a time, 0.15 s each


async def test_template_without_the_flow_makes_it_inactive(kit) -> None:
    flow = {"key": "f", "trigger": "manual", "steps": [{"id": "m", "type": "map", "set": {"a": 1}}]}
    other = {**flow, "key": "g"}
    project = await kit.project(jira_definition([flow], slot_type="http"))
    flow_id = kit.flow_id(project, "f")
    response = await kit.client.put(
        f"/api/v1/template/{project['templateId']}",
        json={"definition": jira_definition([other], slot_type="http")},
        headers=kit.auth,
    )
    assert response.status_code == 200, response.text
    # The project stays on its pinned version (which has the flow) until it is upgraded.
    assert (await kit.wait(await kit.trigger(flow_id, {})))["status"] == "succeeded"
    response = await kit.client.post(f"/api/v1/project/{project['id']}/upgrade", headers=kit.auth)
    assert response.status_code == 200, response.text
    response = await kit.client.post(f"/api/v1/flow/{flow_id}/run", json={}, headers=kit.auth)
    assert response.status_code == 409
    assert response.json()["metadata"]["code"] == "flow_inactive"


async def test_long_delay_releases_the_worker_and_resumes(kit) -> None:
    flow = {
        "key": "f",
        "trigger": "manual",
        "steps": [
            {"id": "before", "type": "map", "set": {"n": "{{ trigger.body.n }}"}},
            {"id": "pause", "type": "delay", "seconds": "{{ trigger.body.wait }}"},
            {"id": "short", "type": "delay", "seconds": 0.05},
            {
                "id": "out",
                "type": "respond",
                "body": {"n": "{{ vars.n }}", "paused": "{{ steps.pause.output.seconds }}"},
            },
        ],
    }
    project = await kit.project(jira_definition([flow], slot_type="http"))
    started = time.monotonic()
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {"n": 5, "wait": 1.3}))
    assert run["status"] == "succeeded", run
    assert time.monotonic() - started >= 1.3
    assert run["result"]["body"] == {"n": 5, "paused": 1.3}
    assert run["attempt"] == 2  # released during the pause, claimed again when it was due
    assert [(s["path"], s["status"]) for s in run["steps"]] == [
        ("before", "succeeded"),
        ("pause", "succeeded"),
        ("short", "succeeded"),
        ("out", "succeeded"),
    ]
