"""A sync flow's respond step through the real webhook: what it may set reaches the caller, and a reply ihub
refuses to send (1xx, connection headers, line breaks, non-latin-1 text, non-finite numbers, too many headers)
fails the run with a clear error while the caller gets 502 with that error."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from incoming_support import JIRA_SLOT, Incoming, Trigger

from ihub.flows.reply import MAX_HEADERS

pytestmark = pytest.mark.anyio


def sync_flow(key: str, **respond: Any) -> dict[str, Any]:
    step = {"id": "reply", "type": "respond", "status": 200, "body": {"ok": True}, **respond}
    return {"key": key, "name": key, "trigger": {"type": "jwt"}, "mode": "sync", "timeout": 10, "steps": [step]}


# Templated names and values pass the definition's checks; the engine checks what they render to.
BAD = {
    "interim": (sync_flow("interim", status="{{ 101 }}"), "status 101 is not a final HTTP status"),
    "framing": (
        sync_flow("framing", headers={"{{ 'Transfer-Encoding' }}": "chunked"}),
        "header Transfer-Encoding belongs to the connection",
    ),
    "length": (sync_flow("length", headers={"{{ 'content-length' }}": "5"}), "belongs to the connection"),
    "proxy": (sync_flow("proxy", headers={"{{ 'Proxy-Authenticate' }}": "x"}), "belongs to the connection"),
    "crlf": (
        sync_flow("crlf", headers={"X-Note": "{{ 'a\\r\\nSet-Cookie: session=stolen' }}"}),
        "header X-Note holds a line break",
    ),
    "unicode": (sync_flow("unicode", headers={"X-Name": "{{ 'Zoë ✓' }}"}), "header X-Name is not latin-1"),
    "nan": (sync_flow("nan", body={"n": "{{ 1e308 * 10 }}"}), "not finite"),
    "many": (
        sync_flow("many", headers={f"X-H{i}": "{{ 'v' }}" for i in range(MAX_HEADERS + 1)}),
        f"a reply has at most {MAX_HEADERS}",
    ),
    "huge-status": (sync_flow("huge-status", status="{{ 10**30 }}"), "is not a final HTTP status"),
    "no-content-body": (sync_flow("no-content-body", status="{{ 204 }}"), "status 204 carries no body"),
}
GOOD = [
    sync_flow("headers", status=202, headers={"X-Ticket": "{{ 'SUP-1' }}", "Cache-Control": "no-store"}),
    sync_flow("empty", status=204, body=None),
]


async def setup(incoming: Incoming, flows: list[dict[str, Any]]) -> dict[str, Trigger]:
    definition = {"connections": [JIRA_SLOT], "flows": flows}
    body = {"name": f"tpl-{uuid.uuid4().hex[:8]}", "description": "", "definition": definition}
    response = await incoming.client.post("/api/v1/template/org/1", json=body, headers=incoming.auth)
    assert response.status_code == 200, response.text
    body = {"name": f"prj-{uuid.uuid4().hex[:8]}", "templateId": response.json()["templates"][0]["id"]}
    response = await incoming.client.post("/api/v1/project/org/1", json=body, headers=incoming.auth)
    assert response.status_code == 200, response.text
    incoming.flows = {flow["key"]: flow["id"] for flow in response.json()["projects"][0]["flows"]}
    return {flow["key"]: await incoming.trigger(flow["key"]) for flow in flows}


async def call(incoming: Incoming, trigger: Trigger) -> httpx.Response:
    return await incoming.webhook(await incoming.access_token(trigger), {"summary": "s"})


async def test_bad_replies_fail_the_run_and_the_caller_gets_502(incoming: Incoming) -> None:
    triggers = await setup(incoming, [flow for flow, _ in BAD.values()])
    for key, (_, message) in BAD.items():
        response = await call(incoming, triggers[key])
        assert response.status_code == 502, (key, response.status_code, response.headers, response.text)
        body = response.json()
        assert body["status"] == "failed", (key, body)
        assert message in body["error"], (key, body["error"])
        assert "set-cookie" not in response.headers and "transfer-encoding" not in response.headers
        run = await incoming.client.get(f"/api/v1/run/{body['runId']}", headers=incoming.auth)
        assert run.json()["runs"][0]["status"] == "failed"
        assert message in run.json()["runs"][0]["error"]


async def test_good_replies_reach_the_caller(incoming: Incoming) -> None:
    triggers = await setup(incoming, GOOD)
    response = await call(incoming, triggers["headers"])
    assert response.status_code == 202, response.text
    assert response.headers["x-ticket"] == "SUP-1"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"ok": True}
    response = await call(incoming, triggers["empty"])
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert response.headers["x-ihub-run-id"]


async def test_literal_connection_headers_and_interim_statuses_are_refused_when_saved(incoming: Incoming) -> None:
    for flow, mentions in (
        (sync_flow("a", headers={"Transfer-Encoding": "chunked"}), "belongs to the connection"),
        (sync_flow("b", headers={"Bad Name": "x"}), "is not an HTTP token"),
        (sync_flow("c", status=100), "status"),
    ):
        body = {"name": f"tpl-{uuid.uuid4().hex[:8]}", "definition": {"connections": [JIRA_SLOT], "flows": [flow]}}
        response = await incoming.client.post("/api/v1/template/org/1", json=body, headers=incoming.auth)
        assert response.status_code == 400, response.text
        assert mentions in response.json()["metadata"]["message"]


def test_a_stored_reply_is_checked_again_before_it_is_sent() -> None:
    """A run stored by an older version (before the engine checked replies) cannot write a bad response."""
    from ihub.incoming.routes import sync_reply

    ids = {"runId": "7", "flowId": "3"}
    stored = {"status": 200, "headers": {"Transfer-Encoding": "chunked"}, "body": {"ok": True}}
    response = sync_reply(ids, "succeeded", stored, None)
    assert response.status_code == 502
    assert b"belongs to the connection" in response.body
    assert "transfer-encoding" not in response.headers
    response = sync_reply(ids, "succeeded", {"status": 201, "body": {"ok": True}}, None)
    assert (response.status_code, response.body) == (201, b'{"ok":true}')


async def test_webhook_payloads_nested_too_deep_are_refused(incoming: Incoming, trigger: Trigger) -> None:
    import json

    from ihub.common.jsonbounds import MAX_PAYLOAD_DEPTH

    value: dict = {}
    for _ in range(300):
        value = {"a": value}
    token = await incoming.access_token(trigger)
    response = await incoming.webhook(token, content=json.dumps(value), headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert f"nested deeper than {MAX_PAYLOAD_DEPTH}" in response.json()["error_description"]
    runs = await incoming.client.get(f"/api/v1/project/{incoming.project_id}/runs", headers=incoming.auth)
    assert runs.status_code == 200 and runs.json()["runs"] == []
