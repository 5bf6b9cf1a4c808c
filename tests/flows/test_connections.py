"""Connection auth at runtime against a real target: every authType, OAuth2 token cache and refresh on 401,
credentials only to the connection's own origin, secrets redacted from run records."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import pytest
from flowkit import http_connection, jira_definition
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

pytestmark = pytest.mark.anyio


def call_flow(*paths: str, url: str | None = None) -> dict:
    steps = [{"id": f"s{i}", "type": "http", "connection": "jira", "path": p} for i, p in enumerate(paths)]
    if url:
        steps.append({"id": "elsewhere", "type": "http", "connection": "jira", "url": url})
    return {"key": "f", "trigger": "manual", "steps": steps}


@pytest.mark.parametrize(
    ("fields", "header", "value"),
    [
        ({"authType": "bearer", "token": "tok-secret-1"}, "Authorization", "Bearer tok-secret-1"),
        ({"authType": "api_key", "apiKey": "key-secret-2", "apiKeyName": "X-Key"}, "X-Key", "key-secret-2"),
        (
            {"authType": "basic", "username": "u", "password": "pw-secret-3"},
            "Authorization",
            "Basic " + base64.b64encode(b"u:pw-secret-3").decode(),
        ),
    ],
)
async def test_header_auth_types(kit, httpserver: HTTPServer, fields: dict, header: str, value: str) -> None:
    httpserver.expect_request("/x").respond_with_json({"ok": True})
    project = await kit.project(
        jira_definition([call_flow("/x")], slot_type="http"), [http_connection(httpserver.url_for("/"), **fields)]
    )
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}))
    assert run["status"] == "succeeded", run
    request, _ = httpserver.log[0]
    assert request.headers[header] == value
    secret = next(v for k, v in fields.items() if k in ("token", "apiKey", "password"))
    assert secret not in json.dumps(run)


async def test_api_key_in_query_is_redacted(kit, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/x").respond_with_json({"ok": True})
    fields = {"authType": "api_key", "apiKey": "qkey-secret-4", "apiKeyName": "key", "apiKeyIn": "query"}
    project = await kit.project(
        jira_definition([call_flow("/x")], slot_type="http"), [http_connection(httpserver.url_for("/"), **fields)]
    )
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}))
    request, _ = httpserver.log[0]
    assert request.args["key"] == "qkey-secret-4"
    assert "qkey-secret-4" not in json.dumps(run)
    assert run["steps"][0]["request"]["query"]["key"] == "[redacted]"


async def test_no_credentials_to_another_origin(kit, httpserver: HTTPServer) -> None:
    other = HTTPServer(host="127.0.0.1")
    other.start()
    try:
        httpserver.expect_request("/x").respond_with_json({})
        other.expect_request("/leak").respond_with_json({})
        fields = {"authType": "bearer", "token": "tok-secret-5"}
        project = await kit.project(
            jira_definition([call_flow("/x", url=other.url_for("/leak"))], slot_type="http"),
            [http_connection(httpserver.url_for("/"), **fields)],
        )
        run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}))
        assert run["status"] == "succeeded", run
        assert httpserver.log[0][0].headers["Authorization"] == "Bearer tok-secret-5"
        assert "Authorization" not in other.log[0][0].headers
    finally:
        other.stop()


async def test_oauth2_client_credentials_cached_and_refreshed_once_on_401(kit, httpserver: HTTPServer) -> None:
    issued: list[str] = []
    revoked: set[str] = set()

    def token(request: Request) -> Response:
        assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"cid:csecret-6").decode()
        form = parse_qs(request.get_data(as_text=True))
        assert form["grant_type"] == ["client_credentials"] and form["scope"] == ["write"]
        issued.append(f"access-{len(issued) + 1}-xyz")
        return Response(json.dumps({"access_token": issued[-1], "expires_in": 3600}), content_type="application/json")

    def api(request: Request) -> Response:
        given = request.headers.get("Authorization", "")
        if given.removeprefix("Bearer ") in revoked or not given.startswith("Bearer access-"):
            return Response("expired", status=401)
        return Response(json.dumps({"with": given}), content_type="application/json")

    httpserver.expect_request("/oauth/token", method="POST").respond_with_handler(token)
    httpserver.expect_request("/api").respond_with_handler(api)
    fields = {
        "authType": "oauth2_client_credentials",
        "clientId": "cid",
        "clientSecret": "csecret-6",
        "tokenUrl": httpserver.url_for("/oauth/token"),
        "scope": "write",
    }
    project = await kit.project(
        jira_definition([call_flow("/api", "/api")], slot_type="http"),
        [http_connection(httpserver.url_for("/"), **fields)],
    )
    flow_id = kit.flow_id(project, "f")
    run = await kit.wait(await kit.trigger(flow_id, {}))
    assert run["status"] == "succeeded", run
    assert issued == ["access-1-xyz"]  # one token for both calls (cached)

    revoked.add("access-1-xyz")  # the target stops accepting it: one refresh, then success
    run = await kit.wait(await kit.trigger(flow_id, {}))
    assert run["status"] == "succeeded", run
    assert issued == ["access-1-xyz", "access-2-xyz"]
    assert run["steps"][-1]["response"]["body"] == {"with": "Bearer [redacted]"}
    assert "access-2" not in json.dumps(run)
    assert "csecret-6" not in json.dumps(run)

    revoked.add("access-2-xyz")
    revoked.add("access-3-xyz")  # still 401 after the one refresh: the step fails, no loop
    run = await kit.wait(await kit.trigger(flow_id, {}))
    assert run["status"] == "failed"
    assert "HTTP 401" in run["error"]
    assert issued[-1] == "access-3-xyz" and len(issued) == 3


async def test_unconfigured_connection_fails_the_step(kit) -> None:
    project = await kit.project(jira_definition([call_flow("/x")], slot_type="http"))
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}))
    assert run["status"] == "failed"
    assert run["error"].startswith("step s0: ")
    assert "not configured" in run["error"]
