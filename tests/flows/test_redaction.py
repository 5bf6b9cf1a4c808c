"""Secrets at rest in run records (issue 7, item 4): a target that echoes the credentials it received, in every
usual encoding, leaves none of them in the database (runs.result, runs.error, run_steps.*) nor in the run API.

The target is real (127.0.0.1). It answers with the Authorization header, the query string and the basic-auth
pair in its body and its headers, plus the secrets base64-, URL-, JSON- and hex-encoded, and one secret placed
exactly across the point where a long body is cut for the step record.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import create_engine, text
from werkzeug import Request, Response

from ihub.db.engine import sync_url
from ihub.flows.engine import SUMMARY_CAP

pytestmark = pytest.mark.anyio

# Characters that make every encoding differ from the plain text: quote, slash, plus, equals, ampersand, space.
PASSWORD = 'jira-pw"quoted/plus+eq=amp&sp ace-7Hn2'
TOKEN = "bearer-tok/with+eq=sign-9Qm4Lz"
API_KEY = "query-key&x=1/+y-3Vb8Tc"
USER = "bot@acme.test"
SECRETS = (PASSWORD, TOKEN, API_KEY)


def encodings(secret: str) -> dict[str, str]:
    """Every form of `secret` a target may echo and a record must not contain (computed here, independently of
    the hub's code)."""
    raw = secret.encode()
    return {
        "plain": secret,
        "json": json.dumps(secret)[1:-1],
        "quote": quote(secret, safe=""),
        "quote-lower-hex": re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(secret, safe="")),
        "quote-path": quote(secret),
        "quote_plus": quote_plus(secret),
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "base64-pair": base64.b64encode(f"{USER}:{secret}".encode()).decode(),
        "base64-in-blob": base64.b64encode(f"{{'k': '{secret}'}}".encode()).decode(),
        "hex": raw.hex(),
    }


def forbidden(secret: str) -> dict[str, str]:
    # A record cut in the middle of the secret would keep its beginning.
    return {**encodings(secret), "prefix": secret[:12]}


def echo(request: Request) -> Response:
    auth = request.headers.get("Authorization", "")
    pair = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
    query = request.query_string.decode()
    body: dict[str, object] = {"authorization": auth, "pair": pair, "query": query, "args": dict(request.args)}
    for secret in SECRETS:
        if secret in auth or secret in pair or secret in request.args.values():
            body[secret[:4] + "-forms"] = list(encodings(secret).values())
            body[secret[:4] + "-number-free"] = f"before {secret} after"
    headers = {"X-Echo-Auth": auth, "X-Echo-Query": query, "X-Echo-Pair": base64.b64encode(pair.encode()).decode()}
    return Response(json.dumps(body), headers=headers, content_type="application/json")


def long_echo(request: Request) -> Response:
    """A text body with a secret across the record's cut (SUMMARY_CAP characters)."""
    auth = request.headers.get("Authorization", "")
    secret = auth.removeprefix("Bearer ")
    return Response("x" * (SUMMARY_CAP - 12) + secret + "y" * 100, content_type="text/plain")


def definition() -> dict:
    slots = [
        {"id": "basic", "type": "jira", "name": "Basic"},
        {"id": "query", "type": "http", "name": "Query key"},
        {"id": "bearer", "type": "http", "name": "Bearer"},
    ]
    steps = [
        {"id": "basic", "type": "http", "connection": "basic", "method": "GET", "path": "/echo"},
        {"id": "query", "type": "http", "connection": "query", "method": "GET", "path": "/echo"},
        {"id": "bearer", "type": "http", "connection": "bearer", "method": "GET", "path": "/echo"},
        {"id": "long", "type": "http", "connection": "bearer", "method": "GET", "path": "/long"},
        {
            "id": "copy",
            "type": "map",
            "set": {"echoed": "{{ steps.basic.output }}", "headers": "{{ steps.bearer.response.headers }}"},
        },
        {
            "id": "reply",
            "type": "respond",
            "status": 200,
            "body": {
                "basic": "{{ steps.basic.output }}",
                "query": "{{ steps.query.output }}",
                "bearer": "{{ steps.bearer.response.headers['x-echo-auth'] }}",
            },
        },
        {
            "id": "boom",
            "type": "fail",
            "message": "target said {{ steps.basic.output.authorization }} and {{ steps.query.output.query }}",
            "on_error": "continue",
        },
        {"id": "last", "type": "fail", "message": "gave up: {{ steps.bearer.output.authorization }}"},
    ]
    return {"connections": slots, "flows": [{"key": "echo", "trigger": "manual", "steps": steps}]}


def raw_run_rows(db_url: str, run_id: str) -> str:
    """runs.result, runs.error and every run_steps column that holds data, as the database stores them."""
    engine = create_engine(sync_url(db_url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT result, error FROM runs WHERE id = :r"), {"r": int(run_id)}).all()
        rows += conn.execute(
            text("SELECT request, response, state, error FROM run_steps WHERE run_id = :r"), {"r": int(run_id)}
        ).all()
    engine.dispose()
    assert len(rows) > 8
    return "\n".join(v if isinstance(v, str) else json.dumps(v) for row in rows for v in row if v is not None)


async def test_echoed_secrets_are_stored_in_no_form(kit, httpserver: HTTPServer, db_url: str) -> None:
    httpserver.expect_request("/echo").respond_with_handler(echo)
    httpserver.expect_request("/long").respond_with_handler(long_echo)
    base = httpserver.url_for("/").rstrip("/")
    connections = [
        {"id": "basic", "details": {"type": "jira", "siteUrl": base, "email": USER, "apiToken": PASSWORD}},
        {
            "id": "query",
            "details": {"type": "http", "baseUrl": base, "authType": "api_key", "apiKey": API_KEY}
            | {"apiKeyIn": "query", "apiKeyName": "key"},
        },
        {"id": "bearer", "details": {"type": "http", "baseUrl": base, "authType": "bearer", "token": TOKEN}},
    ]
    project = await kit.project(definition(), connections)
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "echo"), {}))
    assert run["status"] == "failed", run

    # The target really echoed every secret (so the records had something to redact).
    echoed = [json.loads(r.get_data(as_text=True) or "null") for r, _ in httpserver.log]
    assert [r.path for r, _ in httpserver.log] == ["/echo", "/echo", "/echo", "/long"], echoed
    sent = "\n".join(str(dict(r.headers)) + r.query_string.decode() for r, _ in httpserver.log)
    assert TOKEN in sent and quote_plus(API_KEY) in sent

    stored = raw_run_rows(db_url, run["id"])
    shown = json.dumps((await kit.client.get(f"/api/v1/run/{run['id']}", headers=kit.auth)).json())
    shown_raw = (await kit.client.get(f"/api/v1/run/{run['id']}", headers=kit.auth)).text
    assert "[redacted]" in stored and "gave up" in stored  # the records are there, and were redacted
    for secret in SECRETS:
        for name, form in forbidden(secret).items():
            for where, haystack in (("database", stored), ("API", shown), ("API text", shown_raw)):
                assert form not in haystack, f"{name} form of {secret!r} is in the {where}"


async def test_redaction_keeps_the_rest_of_the_record(kit, httpserver: HTTPServer) -> None:
    """Redaction replaces the secret, not the text around it: records stay useful."""
    httpserver.expect_request("/echo").respond_with_handler(echo)
    base = httpserver.url_for("/").rstrip("/")
    connection = {"id": "bearer", "details": {"type": "http", "baseUrl": base, "authType": "bearer", "token": TOKEN}}
    flow = {
        "key": "echo",
        "trigger": "manual",
        "steps": [{"id": "bearer", "type": "http", "connection": "bearer", "method": "GET", "path": "/echo"}],
    }
    project = await kit.project(
        {"connections": [{"id": "bearer", "type": "http", "name": "B"}], "flows": [flow]}, [connection]
    )
    run = await kit.wait(await kit.trigger(kit.flow_id(project, "echo"), {}))
    assert run["status"] == "succeeded", run
    body = run["steps"][0]["response"]["body"]
    assert body["authorization"] == "Bearer [redacted]"
    assert body["bear-number-free"] == "before [redacted] after"
    assert run["steps"][0]["response"]["headers"]["x-echo-auth"] == "Bearer [redacted]"
