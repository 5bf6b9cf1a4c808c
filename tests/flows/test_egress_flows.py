"""Outgoing calls of flows end to end: the egress policy (proved with loopback targets only), the response
size cap and the total deadline of an http step and of an OAuth2 token fetch, against real servers on
127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flowkit import http_connection, jira_definition
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ihub.config import Settings

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
LOOPBACK_ALLOWED = ["127.0.0.0/8", "::1"]


@pytest.fixture
def egress_allow() -> list[str]:
    return LOOPBACK_ALLOWED


@pytest.fixture
def max_response_bytes() -> int:
    return 10 * MiB


@pytest.fixture
def settings(settings: Settings, egress_allow: list[str], max_response_bytes: int) -> Settings:
    return settings.model_copy(update={"egress_allow": egress_allow, "http_max_response_bytes": max_response_bytes})


def manual_flow(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"key": "f", "trigger": "manual", "steps": list(steps)}


async def run_flow(kit: Any, flow: dict[str, Any], connection: dict[str, Any] | None = None) -> dict[str, Any]:
    definition = jira_definition([flow], slot_type="http") if connection else {"connections": [], "flows": [flow]}
    project = await kit.project(definition, [connection] if connection else None)
    return await kit.wait(await kit.trigger(kit.flow_id(project, "f"), {}), timeout=30)


def oauth_fields(token_url: str) -> dict[str, str]:
    return {"authType": "oauth2_client_credentials", "clientId": "c", "clientSecret": "s", "tokenUrl": token_url}


def step(path: str, run: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in run["steps"] if s["path"] == path)


@pytest.mark.parametrize("egress_allow", [[]], ids=["default-policy"])
async def test_default_policy_refuses_loopback_in_every_form(kit: Any, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/admin").respond_with_json({"secret": "the target's answer"})
    port = httpserver.port
    hosts = ["127.0.0.1", "127.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost", "0.0.0.0", "[::1]"]
    steps = [
        {"id": f"s{i}", "type": "http", "method": "GET", "url": f"http://{host}:{port}/admin", "on_error": "continue"}
        for i, host in enumerate(hosts)
    ]
    run = await run_flow(kit, manual_flow(*steps))
    assert httpserver.log == []  # no connection reached the target
    for i, host in enumerate(hosts):
        record = step(f"s{i}", run)
        assert record["status"] == "failed", (host, record)
        assert "egress policy refuses" in record["error"] and "IHUB_EGRESS_ALLOW" in record["error"], record
        assert record["response"] is None
    assert "the target's answer" not in json.dumps(run)


@pytest.mark.parametrize("egress_allow", [[]], ids=["default-policy"])
async def test_default_policy_refuses_a_connection_and_its_token_url(kit: Any, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/token").respond_with_json({"access_token": "t", "expires_in": 60})
    httpserver.expect_request("/x").respond_with_json({"ok": True})
    base = f"http://127.0.0.1:{httpserver.port}"
    plain = await run_flow(
        kit,
        manual_flow({"id": "call", "type": "http", "connection": "jira", "path": "/x"}),
        http_connection(base, authType="bearer", token="tok-secret-egress"),
    )
    assert plain["status"] == "failed" and "egress policy refuses 127.0.0.1" in plain["error"]
    fields = {"authType": "oauth2_client_credentials", "clientId": "c", "clientSecret": "s-secret-egress"}
    oauth = await run_flow(
        kit,
        manual_flow({"id": "call", "type": "http", "connection": "jira", "path": "/x"}),
        http_connection("https://api.example.test", tokenUrl=f"{base}/token", **fields),
    )
    assert oauth["status"] == "failed"
    assert "token endpoint not called: the egress policy refuses 127.0.0.1" in step("call", oauth)["error"]
    assert httpserver.log == []


async def test_allow_list_opens_loopback(kit: Any, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/x").respond_with_json({"ok": True})
    flow = manual_flow({"id": "call", "type": "http", "method": "GET", "url": f"http://127.1:{httpserver.port}/x"})
    run = await run_flow(kit, flow)
    assert run["status"] == "succeeded", run
    assert step("call", run)["response"]["body"] == {"ok": True}


def endless_chunks(sent: list[int]) -> Iterator[bytes]:
    chunk = b"x" * 65536
    for _ in range(16384):  # up to 1 GiB: far more than any cap, so stopping early is the client's doing
        sent.append(len(chunk))
        yield chunk


async def test_an_answer_above_the_cap_fails_the_step_without_reading_the_rest(
    kit: Any, httpserver: HTTPServer
) -> None:
    sent: list[int] = []
    httpserver.expect_request("/declared").respond_with_data(b"y" * (11 * MiB), content_type="text/plain")
    httpserver.expect_request("/chunked").respond_with_handler(
        lambda _request: Response(endless_chunks(sent), content_type="text/plain")
    )
    base = f"http://127.0.0.1:{httpserver.port}"
    steps = [
        {"id": "declared", "type": "http", "method": "GET", "url": f"{base}/declared", "on_error": "continue"},
        {"id": "chunked", "type": "http", "method": "GET", "url": f"{base}/chunked", "on_error": "continue"},
    ]
    run = await run_flow(kit, manual_flow(*steps))
    for path in ("declared", "chunked"):
        record = step(path, run)
        assert record["status"] == "failed", record
        assert "larger than 10485760 bytes" in record["error"] and "IHUB_HTTP_MAX_RESPONSE_BYTES" in record["error"]
    # The endless answer was cut soon after the cap (socket buffers hold a few MiB at most), not read to its end.
    assert sum(sent) < 64 * MiB


@pytest.mark.parametrize("max_response_bytes", [64 * 1024], ids=["64KiB"])
async def test_the_cap_is_the_setting(kit: Any, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/small").respond_with_data(b"s" * 60_000)
    httpserver.expect_request("/big").respond_with_data(b"b" * 70_000)
    base = f"http://127.0.0.1:{httpserver.port}"
    steps = [
        {"id": "small", "type": "http", "method": "GET", "url": f"{base}/small"},
        {"id": "big", "type": "http", "method": "GET", "url": f"{base}/big"},
    ]
    run = await run_flow(kit, manual_flow(*steps))
    assert step("small", run)["status"] == "succeeded"
    assert "larger than 65536 bytes" in step("big", run)["error"]


def dripping(_request: Request) -> Response:
    def drip() -> Iterator[bytes]:
        for _ in range(120):
            time.sleep(0.25)
            yield b"."

    return Response(drip(), content_type="text/plain")


async def test_timeout_is_a_total_deadline_for_a_dripping_answer(kit: Any, httpserver: HTTPServer) -> None:
    """Each byte arrives well within any read timeout; the whole answer would take 30 s."""
    httpserver.expect_request("/drip").respond_with_handler(dripping)
    url = f"http://127.0.0.1:{httpserver.port}/drip"
    run = await run_flow(kit, manual_flow({"id": "drip", "type": "http", "method": "GET", "url": url, "timeout": 1}))
    assert run["status"] == "failed"
    assert step("drip", run)["error"].startswith("timed out after 1s"), run


async def test_token_fetch_has_the_same_deadline(kit: Any, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/token").respond_with_handler(dripping)
    httpserver.expect_request("/x").respond_with_json({"ok": True})
    base = f"http://127.0.0.1:{httpserver.port}"
    fields = oauth_fields(f"{base}/token")
    run = await run_flow(
        kit,
        manual_flow({"id": "call", "type": "http", "connection": "jira", "path": "/x", "timeout": 1}),
        http_connection(base, **fields),
    )
    assert run["status"] == "failed"
    assert "timed out" in step("call", run)["error"], run
    assert [r.path for r, _ in httpserver.log] == ["/token"]


@pytest.mark.parametrize("max_response_bytes", [64 * 1024], ids=["64KiB"])
async def test_token_answer_above_the_cap_fails_the_step(kit: Any, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/token").respond_with_json({"access_token": "t" * 70_000, "expires_in": 60})
    base = f"http://127.0.0.1:{httpserver.port}"
    fields = oauth_fields(f"{base}/token")
    flow = manual_flow({"id": "call", "type": "http", "connection": "jira", "path": "/x"})
    run = await run_flow(kit, flow, http_connection(base, **fields))
    assert "token endpoint answer refused: the answer is larger than 65536 bytes" in step("call", run)["error"]
