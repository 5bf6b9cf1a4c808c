"""Credential binding (issue 7, item 3): stored secrets go only where they were entered for.

Two real targets on 127.0.0.1 (different ports, so different origins): the connection is configured for A by
the root Owner; then an Owner, Admin or Member of the project's org moves one field that decides where the
secrets go. Whatever the role, the next run sends no old secret anywhere: without new secrets the connection is
no longer configured (nothing is sent), with new ones only the new ones travel. Refused requests (404, 400, 409)
change nothing. A row edited behind the API's back, a step `url` elsewhere or a shared OAuth2 token cache do not
carry a secret elsewhere either.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import create_engine, text
from werkzeug import Request, Response

from ihub.db.engine import sync_url

pytestmark = pytest.mark.anyio

FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Target:
    """A target that answers every path (token endpoints with a token) and remembers what it received."""

    server: HTTPServer
    name: str
    seen: list[str] = field(default_factory=list)

    def url(self, path: str = "") -> str:
        """The target's origin (`http://127.0.0.1:<port>`), or a URL on it."""
        return self.server.url_for(path) if path else self.server.url_for("/").rstrip("/")

    def handle(self, request: Request) -> Response:
        self.seen.append(request_text(request))
        if request.path.endswith(("/token", "/oauth_token.do")):
            token = f"access-{self.name}-{len(self.seen)}"
            return Response(json.dumps({"access_token": token, "expires_in": 3600}), content_type="application/json")
        return Response("{}", content_type="application/json")


def request_text(request: Request) -> str:
    """Everything a request carried, with basic auth and URL encodings decoded, so any form of a secret shows."""
    parts = [request.url, unquote_plus(request.query_string.decode()), request.get_data(as_text=True)]
    for name, value in request.headers.items():
        parts.append(f"{name}: {value}")
        if value.startswith("Basic "):
            parts.append(base64.b64decode(value[6:]).decode(errors="replace"))
    body = request.get_data(as_text=True)
    parts.append(unquote_plus(body))
    return "\n".join(parts)


def start_target(name: str) -> Target:
    server = HTTPServer(host="127.0.0.1", threaded=True)
    target = Target(server, name)
    server.expect_request(re.compile(".*")).respond_with_handler(target.handle)
    server.start()
    return target


@pytest.fixture(scope="module")
def target_servers() -> Iterator[tuple[Target, Target]]:
    # Started once per module: stopping a werkzeug server waits out its 0.5 s poll, which per test (two servers,
    # 122 tests) was most of this module's time.
    a, b = start_target("a"), start_target("b")
    try:
        yield a, b
    finally:
        a.server.stop()
        b.server.stop()


@pytest.fixture
def targets(target_servers: tuple[Target, Target]) -> tuple[Target, Target]:
    """The two servers, with nothing seen yet: each test starts from no requests."""
    for target in target_servers:
        target.seen.clear()
    return target_servers


@dataclass(frozen=True)
class Case:
    """One field that decides where secrets go: how the connection starts, how it is moved, what is new."""

    slot_type: str
    initial: Callable[[Target], dict[str, Any]]
    move: Callable[[Target, Target], dict[str, Any]]
    new_secrets: dict[str, str]
    # The target that receives the moved connection's request (b, or a for placement-only changes).
    moved_to_b: bool = True


OLD = "old-secret-Zq7Wx9-"  # a prefix; each case appends its own suffix so every old value is distinct
NEW = "new-secret-Kp4Rt2-"

CASES: dict[str, Case] = {
    "http.baseUrl": Case(
        "http",
        lambda a: {"baseUrl": a.url(), "authType": "bearer", "token": OLD + "token"},
        lambda a, b: {"baseUrl": b.url()},
        {"token": NEW + "token"},
    ),
    "http.tokenUrl": Case(
        "http",
        lambda a: {
            "baseUrl": a.url(),
            "authType": "oauth2_client_credentials",
            "clientId": "client-1",
            "clientSecret": OLD + "client",
            "tokenUrl": a.url("/token"),
        },
        lambda a, b: {"tokenUrl": b.url("/token")},
        {"clientSecret": NEW + "client"},
    ),
    "jira.siteUrl": Case(
        "jira",
        lambda a: {"siteUrl": a.url(), "email": "bot@acme.test", "apiToken": OLD + "jira"},
        lambda a, b: {"siteUrl": b.url()},
        {"apiToken": NEW + "jira"},
    ),
    "servicenow.instanceUrl": Case(
        "servicenow",
        lambda a: {"instanceUrl": a.url(), "authType": "basic", "username": "svc", "password": OLD + "snow"},
        lambda a, b: {"instanceUrl": b.url()},
        {"password": NEW + "snow"},
    ),
    "servicenow.tokenUrl": Case(
        "servicenow",
        lambda a: {
            "instanceUrl": a.url(),
            "authType": "oauth2_client_credentials",
            "clientId": "client-2",
            "clientSecret": OLD + "snowclient",
            "tokenUrl": a.url("/oauth_token.do"),
        },
        lambda a, b: {"tokenUrl": b.url("/oauth_token.do")},
        {"clientSecret": NEW + "snowclient"},
    ),
    # Placement: same origin, but the secret would land in another header, the query string, another scheme.
    "http.apiKeyIn": Case(
        "http",
        lambda a: {"baseUrl": a.url(), "authType": "api_key", "apiKey": OLD + "key", "apiKeyName": "X-Key"},
        lambda a, b: {"apiKeyIn": "query"},
        {"apiKey": NEW + "key"},
        moved_to_b=False,
    ),
    "http.apiKeyName": Case(
        "http",
        lambda a: {"baseUrl": a.url(), "authType": "api_key", "apiKey": OLD + "key2", "apiKeyName": "X-Key"},
        lambda a, b: {"apiKeyName": "X-Echo-Me"},
        {"apiKey": NEW + "key2"},
        moved_to_b=False,
    ),
    "http.authType": Case(
        "http",
        # A token stored but unused under api_key auth must not start travelling when the auth type changes.
        lambda a: {"baseUrl": a.url(), "authType": "api_key", "apiKey": OLD + "key3", "token": OLD + "dormant"},
        lambda a, b: {"authType": "bearer"},
        {"token": NEW + "bearer"},
        moved_to_b=False,
    ),
}

FLOW = {
    "key": "call",
    "name": "Call the target",
    "trigger": {"type": "jwt"},
    "steps": [{"id": "call", "type": "http", "connection": "jira", "method": "GET", "path": "/api/thing"}],
}


async def make_project(hub, slot_type: str, details: dict[str, Any]) -> tuple[str, dict[str, Any]]:  # noqa: ANN001
    """(org id, project) with one connection slot of `slot_type` configured by the root Owner."""
    org = await hub.org()
    template = await hub.template(org, slots=[{"id": "jira", "type": slot_type, "name": "Target"}], flows=[FLOW])
    project = await hub.project(org, template["id"])
    response = await put_connection(hub.client, hub.auth, project["id"], {"type": slot_type, **details})
    assert response.status_code == 200, response.text
    assert response.json()["projects"][0]["connections"][0]["configured"], response.text
    return org, response.json()["projects"][0]


async def put_connection(client, auth: dict[str, str], project_id: str, details: dict[str, Any], **extra: Any):  # noqa: ANN001, ANN201
    body = {"connections": [{"id": "jira", "details": details}], **extra}
    return await client.put(f"/api/v1/project/{project_id}", json=body, headers=auth)


async def run_flow(hub, project: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    flow_id = next(f["id"] for f in project["flows"] if f["key"] == "call")
    response = await hub.client.post(f"/api/v1/flow/{flow_id}/run", json={}, headers=hub.auth)
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        response = await hub.client.get(f"/api/v1/run/{run_id}", headers=hub.auth)
        run = response.json()["runs"][0]
        if run["status"] in FINAL:
            return run
        assert asyncio.get_running_loop().time() < deadline, run
        await asyncio.sleep(0.05)


def stored_row(db_url: str, project_id: str) -> tuple[str, str | None, str]:
    """(config as JSON, sealed secrets, secret field names) of the project's connection, read from the database."""
    engine = create_engine(sync_url(db_url))
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT config, secrets_sealed, secret_fields FROM connections WHERE project_id = :p"),
            {"p": int(project_id)},
        ).one()
    engine.dispose()
    return tuple(v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True) for v in row)  # type: ignore[return-value]


def edit_config(db_url: str, project_id: str, **changes: Any) -> None:
    """Change a connection's plain config directly in the database, as someone with write access to it could."""
    engine = create_engine(sync_url(db_url))
    with engine.begin() as conn:
        where = {"p": int(project_id)}
        config = conn.execute(text("SELECT config FROM connections WHERE project_id = :p"), where).scalar_one()
        config = {**(json.loads(config) if isinstance(config, str) else config), **changes}
        cast = "CAST(:c AS JSON)" if engine.dialect.name == "postgresql" else ":c"
        conn.execute(
            text(f"UPDATE connections SET config = {cast} WHERE project_id = :p"), {"c": json.dumps(config), **where}
        )
    engine.dispose()


def old_values(details: dict[str, Any]) -> list[str]:
    return [v for v in details.values() if isinstance(v, str) and v.startswith(OLD)]


@pytest.mark.parametrize("with_new_secrets", [False, True], ids=["keep-secrets", "new-secrets"])
@pytest.mark.parametrize("role", ["Owner", "Admin", "Member"])
@pytest.mark.parametrize("case_name", list(CASES))
async def test_moving_a_connection_never_carries_an_old_secret(
    hub, targets, case_name: str, role: str, with_new_secrets: bool
) -> None:
    a, b = targets
    case = CASES[case_name]
    org, project = await make_project(hub, case.slot_type, case.initial(a))
    old = old_values(case.initial(a))
    run = await run_flow(hub, project)
    assert run["status"] == "succeeded", run
    assert any(old[0] in seen for seen in a.seen)  # the old secret really went to A: the detector works
    a.seen.clear()

    editor = await hub.login(org, role)
    change = {"type": case.slot_type, **case.move(a, b), **(case.new_secrets if with_new_secrets else {})}
    response = await put_connection(hub.client, editor, project["id"], change)
    assert response.status_code == 200, response.text
    connection = response.json()["projects"][0]["connections"][0]
    # Every role may move a connection; none keeps an old secret by doing so.
    assert connection["secretsSet"] == (sorted(case.new_secrets) if with_new_secrets else [])
    assert connection["configured"] is with_new_secrets

    run = await run_flow(hub, project)
    received = a.seen + b.seen
    for value in old:
        assert not any(value in seen for seen in received), f"{value} was sent after the move"
    if with_new_secrets:
        assert run["status"] == "succeeded", run
        new_value = next(iter(case.new_secrets.values()))
        receiver = b if case.moved_to_b else a
        assert any(new_value in seen for seen in receiver.seen)
    else:
        assert run["status"] == "failed" and "not configured" in run["error"], run
        assert received == []


async def test_refused_changes_leave_the_connection_as_it_was(hub, targets, db_url) -> None:
    a, b = targets
    case = CASES["http.baseUrl"]
    org, project = await make_project(hub, "http", case.initial(a))
    before = stored_row(db_url, project["id"])
    sibling = await hub.org()
    child = await hub.org(parent=org)
    attempts = [
        # Outside the caller's subtree: the project does not exist for them.
        (await hub.login(sibling, "Owner"), {}, 404),
        (await hub.login(child, "Admin"), {}, 404),
        # A move together with a bad field: nothing of the request is applied.
        (hub.auth, {"apiKeyIn": "body"}, 400),
    ]
    taken = await hub.project(org, project["templateId"])
    attempts.append((hub.auth, {}, 409))  # with a rename to a taken name below
    for auth, extra_fields, status in attempts:
        extra = {"name": taken["name"]} if status == 409 else {}
        response = await put_connection(
            hub.client, auth, project["id"], {"type": "http", "baseUrl": b.url(), **extra_fields}, **extra
        )
        assert response.status_code == status, response.text
        assert stored_row(db_url, project["id"]) == before
    run = await run_flow(hub, project)
    assert run["status"] == "succeeded", run
    assert b.seen == [] and any(OLD + "token" in seen for seen in a.seen)


async def test_changes_that_do_not_move_the_target_keep_the_secrets(hub, targets) -> None:
    a, _ = targets
    _, project = await make_project(
        hub, "jira", {"siteUrl": a.url(), "email": "bot@acme.test", "apiToken": OLD + "kept"}
    )
    response = await put_connection(hub.client, hub.auth, project["id"], {"email": "other@acme.test"})
    assert response.json()["projects"][0]["connections"][0]["secretsSet"] == ["apiToken"]
    # The same URL written differently (a trailing slash) is the same target.
    response = await put_connection(hub.client, hub.auth, project["id"], {"siteUrl": a.url() + "/"})
    assert response.json()["projects"][0]["connections"][0]["secretsSet"] == ["apiToken"]
    run = await run_flow(hub, project)
    assert run["status"] == "succeeded", run
    assert any("other@acme.test:" + OLD + "kept" in seen for seen in a.seen)


async def test_a_row_edited_behind_the_api_does_not_redirect_secrets(hub, targets, db_url) -> None:
    """The target is sealed with the secrets (authenticated encryption): moving the plain config in the
    database makes the connection refuse to run instead of sending the secret to the new place."""
    a, b = targets
    case = CASES["servicenow.tokenUrl"]
    _, project = await make_project(hub, "servicenow", case.initial(a))
    edit_config(db_url, project["id"], tokenUrl=b.url("/oauth_token.do"))
    run = await run_flow(hub, project)
    assert run["status"] == "failed", run
    assert "entered for another target (changed: tokenUrl)" in run["error"]
    assert b.seen == [] and a.seen == []


@pytest.mark.parametrize(
    "elsewhere",
    [
        "{b}/leak",  # a step's absolute url
        "{a_netloc}\\@{b_netloc}/leak",  # a parser trick: httpx connects to b, so b is what is checked
    ],
)
async def test_a_step_url_elsewhere_gets_nothing_of_the_connection(hub, targets, elsewhere: str) -> None:
    a, b = targets
    org = await hub.org()
    flow = {
        "key": "call",
        "trigger": {"type": "jwt"},
        "steps": [
            {
                "id": "call",
                "type": "http",
                "connection": "jira",
                "method": "GET",
                "url": elsewhere.format(
                    b=b.url(), a_netloc="http://" + a.url().split("//")[1], b_netloc=b.url().split("//")[1]
                ),
            }
        ],
    }
    template = await hub.template(org, slots=[{"id": "jira", "type": "http", "name": "T"}], flows=[flow])
    project = await hub.project(org, template["id"])
    details = {
        "type": "http",
        "baseUrl": a.url(),
        "authType": "api_key",
        "apiKey": OLD + "query",
        "apiKeyIn": "query",
        "apiKeyName": "key",
        "headers": {"X-Tenant": "tenant-header-value"},
    }
    response = await put_connection(hub.client, hub.auth, project["id"], details)
    assert response.status_code == 200, response.text
    run = await run_flow(hub, response.json()["projects"][0])
    assert run["status"] == "succeeded", run
    assert len(b.seen) == 1 and a.seen == []
    assert OLD + "query" not in b.seen[0] and "tenant-header-value" not in b.seen[0]


async def test_oauth_tokens_are_not_shared_with_a_connection_that_lacks_the_secret(hub, targets) -> None:
    """Token URL and client id are not secret: a second tenant copying them, with a wrong client secret and its
    own base URL, must not be handed the first tenant's cached access token."""
    a, b = targets
    issued: list[str] = []

    def token(request: Request) -> Response:
        if (
            request.headers.get("Authorization")
            != "Basic " + base64.b64encode(b"shared-client:" + OLD.encode() + b"oauth").decode()
        ):
            return Response("bad client", status=401)
        issued.append(f"victim-access-token-{uuid.uuid4().hex}")
        return Response(json.dumps({"access_token": issued[-1], "expires_in": 3600}), content_type="application/json")

    a.server.clear_all_handlers()
    a.server.expect_request("/token").respond_with_handler(token)
    a.server.expect_request(re.compile(".*")).respond_with_handler(a.handle)
    oauth = {
        "authType": "oauth2_client_credentials",
        "clientId": "shared-client",
        "tokenUrl": a.url("/token"),
    }
    _, victim = await make_project(hub, "http", {"baseUrl": a.url(), "clientSecret": OLD + "oauth", **oauth})
    assert (await run_flow(hub, victim))["status"] == "succeeded"
    assert len(issued) == 1
    _, thief = await make_project(hub, "http", {"baseUrl": b.url(), "clientSecret": "guessed-wrong", **oauth})
    run = await run_flow(hub, thief)
    assert run["status"] == "failed" and "token endpoint answered 401" in run["error"], run
    assert b.seen == [] and len(issued) == 1


async def test_routing_headers_are_refused_on_a_connection(hub, targets) -> None:
    a, _ = targets
    _, project = await make_project(hub, "http", {"baseUrl": a.url(), "authType": "bearer", "token": OLD + "h"})
    response = await put_connection(hub.client, hub.auth, project["id"], {"headers": {"Host": "evil.example"}})
    assert response.status_code == 400
    assert "would decide which server gets the credentials" in response.text


async def test_a_step_cannot_route_a_connection_elsewhere_with_a_host_header(hub, targets) -> None:
    """On a shared front end the Host header picks the server: a step may not set it beside credentials, even
    under a computed name."""
    a, _ = targets
    flow = {
        **FLOW,
        "steps": [{**FLOW["steps"][0], "headers": {"{{ 'Ho' ~ 'st' }}": "tenant-b.example"}}],
    }
    org = await hub.org()
    template = await hub.template(org, slots=[{"id": "jira", "type": "http", "name": "T"}], flows=[flow])
    project = await hub.project(org, template["id"])
    details = {"type": "http", "baseUrl": a.url(), "authType": "bearer", "token": OLD + "host"}
    response = await put_connection(hub.client, hub.auth, project["id"], details)
    run = await run_flow(hub, response.json()["projects"][0])
    assert run["status"] == "failed" and "header 'host' cannot be set" in run["error"], run
    assert a.seen == []


async def test_secrets_sealed_before_binding_still_work_and_are_bound_on_the_next_write(
    app, hub, targets, db_url
) -> None:
    """A hub upgraded from before this rule: its sealed secrets (no target inside) keep working, and the first
    change through the API binds them, or drops them if the change moves the connection."""
    from ihub.projects.service import connection_runtime

    a, b = targets
    _, project = await make_project(hub, "http", {"baseUrl": a.url(), "authType": "bearer", "token": OLD + "legacy"})
    context = app.state.context
    engine = create_engine(sync_url(db_url))
    with engine.begin() as conn:
        where = {"p": int(project["id"])}
        connection_id = conn.execute(text("SELECT id FROM connections WHERE project_id = :p"), where).scalar_one()
        legacy = context.box.seal(json.dumps({"token": OLD + "legacy"}), f"connection:{connection_id}")
        conn.execute(text("UPDATE connections SET secrets_sealed = :s WHERE project_id = :p"), {"s": legacy, **where})
    engine.dispose()
    async with context.sessions() as session:
        runtime = await connection_runtime(session, context.box, int(project["id"]), "jira")
    assert runtime["secrets"] == {"token": OLD + "legacy"}
    response = await put_connection(hub.client, hub.auth, project["id"], {"baseUrl": b.url()})
    assert response.json()["projects"][0]["connections"][0]["secretsSet"] == []
    assert stored_row(db_url, project["id"])[1] is None


async def test_a_routing_header_written_into_the_row_stops_the_connection(hub, targets, db_url) -> None:
    a, _ = targets
    _, project = await make_project(hub, "http", {"baseUrl": a.url(), "authType": "bearer", "token": OLD + "row"})
    edit_config(db_url, project["id"], headers={"X-Forwarded-Host": "tenant-b.example"})
    run = await run_flow(hub, project)
    assert run["status"] == "failed" and "'x-forwarded-host' is not allowed" in run["error"], run
    assert a.seen == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://user:password@api.example.com", "must not contain a user name or password"),
        ("https://", "must be an http:// or https:// URL"),
        ("http://:8080/path", "must be an http:// or https:// URL"),
    ],
)
async def test_url_fields_carry_no_credentials_and_name_a_host(hub, url: str, message: str) -> None:
    """A URL is plain config (returned by the API, outside the binding) and must be one the origin check can
    read: credentials in it, or a URL without a host, are refused when entered."""
    org = await hub.org()
    template = await hub.template(org, slots=[{"id": "jira", "type": "http", "name": "T"}], flows=[FLOW])
    project = await hub.project(org, template["id"])
    response = await put_connection(hub.client, hub.auth, project["id"], {"baseUrl": url})
    assert response.status_code == 400 and message in response.text, response.text
    assert "password@" not in response.text
