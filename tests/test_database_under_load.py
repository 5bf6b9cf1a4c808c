"""No request stalls the database: bodies are read before any transaction, reads never wait for the write
lock, and a lock held past the timeout answers 503 + Retry-After (docs/security.md, "Database under load")."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ihub.app import create_app
from ihub.config import Settings
from ihub.db.registry import metadata

pytestmark = pytest.mark.anyio

BACKENDS = [b for b in os.environ.get("IHUB_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
POSTGRES_ADMIN_URL = os.environ.get("IHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def sign(secret: str, nonce: str) -> str:
    return hashlib.sha256((secret + nonce).encode()).hexdigest()


MANUAL_FLOW = {"key": "manual", "trigger": "manual", "steps": [{"id": "note", "type": "map", "set": {"n": "1"}}]}


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> str:
    return make_url(url).database or ""


# --- a stalled body on a live hub ----------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def live_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """'' for the embedded default (SQLite in the data dir), or an empty PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield ""
        return
    admin = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql")
    name = f"ihub_stall_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin.render_as_string(False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manual_flow(http: httpx.Client) -> str:
    definition = {"connections": [], "flows": [MANUAL_FLOW]}
    response = http.post("/api/v1/template/org/1", json={"name": "stall", "definition": definition})
    template_id = response.raise_for_status().json()["templates"][0]["id"]
    response = http.post("/api/v1/project/org/1", json={"name": "stall", "templateId": template_id})
    return response.raise_for_status().json()["projects"][0]["flows"][0]["id"]


def stall_body(port: int, path: str, token: str) -> socket.socket:
    """Send headers announcing 100 000 bytes, then 10 of them, and keep the connection open."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"n": 1, "')
    return sock


def nothing_answered(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return not sock.recv(1024)  # b"" would mean closed: an answer of sorts
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


@pytest.mark.slow
def test_a_stalled_body_does_not_stall_other_clients(start_live_hub, live_database: str) -> None:  # noqa: ANN001
    # The stalled body's deadline is far away, so everything below happens while it is still being awaited.
    hub = start_live_hub(live_database, {"IHUB_BODY_READ_TIMEOUT_SECONDS": "120"})
    stalled: list[socket.socket] = []
    try:
        with httpx.Client(base_url=hub.url, timeout=60) as http:
            http.headers["Authorization"] = token = login(http, hub.user_id, hub.secret)
            flow_id = manual_flow(http)
            port = int(hub.url.rsplit(":", 1)[1])
            # Two lying clients, on the route that once opened a transaction before reading its body.
            stalled = [stall_body(port, f"/api/v1/flow/{flow_id}/run", token) for _ in range(2)]
            time.sleep(0.5)  # let the server take their headers

            assert http.get("/api/v1/org").status_code == 200
            created = http.post("/api/v1/org", json={"name": "while-stalled"})
            assert created.status_code == 200, created.text
            run = http.post(f"/api/v1/flow/{flow_id}/run", json={"n": 2})
            assert run.status_code == 202, run.text
            assert login(http, hub.user_id, hub.secret)
            names = [org["name"] for org in http.get("/api/v1/org").json()["organizations"]]
            assert "while-stalled" in names
            # Causality, not timing: all of the above finished while the lying clients were still waited on.
            assert all(nothing_answered(sock) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


def login(http: httpx.Client, user_id: str, secret: str) -> str:
    nonce = str(uuid.uuid1())
    response = http.post("/api/v1/token", json={"userId": user_id, "nonce": nonce, "hash": sign(secret, nonce)})
    assert response.status_code == 200, response.text
    return response.json()["tokens"][0]["token"]


# --- the body deadline itself (in process: a receive() that never delivers) -------------------------------


async def call_with_stalled_body(app, path: str) -> tuple[int, dict[str, str], bytes]:  # noqa: ANN001
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-length", b"1000"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    sent = asyncio.Event()
    first = True

    async def receive() -> dict:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"na', "more_body": True}
        await sent.wait()  # the rest never comes while the app is deciding
        return {"type": "http.disconnect"}

    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            sent.set()

    await asyncio.wait_for(app(scope, receive, send), timeout=60)
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], headers, body


async def test_a_body_that_does_not_arrive_in_time_is_408(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    settings = Settings(
        data_dir=tmp_path, database_url=url, secret_key="k" * 40, body_read_timeout_seconds=0.2, _env_file=None
    )
    app = create_app(settings)

    status, headers, body = await call_with_stalled_body(app, "/api/v1/org")
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["metadata"]["code"] == "request_timeout"
    status, headers, body = await call_with_stalled_body(app, "/prod/incoming/token")
    assert status == 408
    assert json.loads(body)["error"] == "request_timeout"  # RFC 6749 shape on /incoming
    await app.state.context.engine.dispose()
    await app.state.context.read_engine.dispose()


# --- reads beside a held write lock --------------------------------------------------------------------


def hold_write_lock(db_url: str):  # noqa: ANN201
    """Another process's write transaction on the root org, held until closed."""
    if is_sqlite(db_url):
        conn = sqlite3.connect(sqlite_path(db_url), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE organizations SET name = name WHERE id = 1")
        return conn
    # PostgreSQL's nearest equivalent of SQLite's write lock: every write waits, plain reads go on.
    conn = psycopg.connect(make_url(db_url).set(drivername="postgresql").render_as_string(False))
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    conn.execute(f"LOCK TABLE {tables} IN EXCLUSIVE MODE")
    return conn


READ_PATHS = ["/api/v1/org", "/api/v1/org/1", "/api/v1/user/org/1", "/api/v1/org/1/templates", "/api/v1/project/org/1"]


def every_get_route(app) -> list[str]:  # noqa: ANN001
    """Every GET under /api/v1, its path parameters filled with 1 (the root org, the first user, or a 404)."""
    documented = app.openapi()["paths"]
    return [re.sub(r"\{[^}]+\}", "1", path) for path, ops in documented.items() if "get" in ops and "/api/v1/" in path]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A short lock timeout, so that a request that (wrongly) waits for the lock fails fast instead of hanging.
    return settings.model_copy(update={"db_lock_timeout_seconds": 1})


async def test_reads_do_not_wait_for_a_write_lock_held_elsewhere(client, auth, db_url) -> None:  # noqa: ANN001
    holder = hold_write_lock(db_url)
    try:
        for path in READ_PATHS:
            response = await client.get(path, headers=auth)
            assert response.status_code == 200, (path, response.text)
    finally:
        holder.rollback() if not is_sqlite(db_url) else holder.execute("ROLLBACK")
        holder.close()


async def test_no_get_route_waits_for_or_takes_the_write_lock(app, client, auth, db_url) -> None:  # noqa: ANN001
    # A GET route that waited would answer 503 here; one that wrote would fail on its read-only session.
    paths = every_get_route(app)
    assert len(paths) >= 10
    async with app.state.context.sessions() as writer:
        await writer.execute(text("UPDATE organizations SET name = name WHERE id = 1"))
        for path in paths:
            response = await client.get(path, headers=auth)
            assert response.status_code < 500, (path, response.text)
        await writer.rollback()


async def test_reads_do_not_wait_for_this_process_write_transaction(app, client, auth) -> None:  # noqa: ANN001
    # The hub's own write connection (on SQLite, the only one) is inside a transaction that has written.
    async with app.state.context.sessions() as writer:
        await writer.execute(text("UPDATE organizations SET name = 'renamed-uncommitted' WHERE id = 1"))
        for path in READ_PATHS:
            response = await client.get(path, headers=auth)
            assert response.status_code == 200, (path, response.text)
        # Readers see the last commit, not the writer's work in progress.
        org = (await client.get("/api/v1/org/1", headers=auth)).json()["organizations"][0]
        assert org["name"] != "renamed-uncommitted"
        await writer.rollback()


async def test_read_sessions_refuse_to_write(app, db_url) -> None:  # noqa: ANN001
    if not is_sqlite(db_url):
        pytest.skip("on PostgreSQL reads and writes share one engine; readers never wait for writers there")
    async with app.state.context.read_sessions() as reader:
        with pytest.raises(Exception, match="readonly|read-only|query_only"):
            await reader.execute(text("UPDATE organizations SET name = 'x' WHERE id = 1"))


# --- a lock held past the timeout ----------------------------------------------------------------------


def b64url(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1


async def test_a_lock_held_past_the_timeout_answers_503(client, auth, db_url, owner) -> None:  # noqa: ANN001
    holder = hold_write_lock(db_url)
    try:
        response = await client.put("/api/v1/org/1", json={"name": "blocked"}, headers=auth)
        assert_busy(response)
        assert response.json()["metadata"] == {
            "status": 503,
            "code": "temporarily_unavailable",
            "message": response.json()["metadata"]["message"],
        }
        nonce = str(uuid.uuid1())
        login = {"userId": owner.user_id, "nonce": nonce, "hash": sign(owner.secret, nonce)}
        assert_busy(await client.post("/api/v1/token", json=login))
    finally:
        holder.rollback() if not is_sqlite(db_url) else holder.execute("ROLLBACK")
        holder.close()
    # Nothing was written while refused, and the hub recovers once the lock is gone.
    assert (await client.get("/api/v1/org/1", headers=auth)).json()["organizations"][0]["name"] != "blocked"
    assert (await client.put("/api/v1/org/1", json={"name": "after"}, headers=auth)).status_code == 200
    nonce = str(uuid.uuid1())
    login = {"userId": owner.user_id, "nonce": nonce, "hash": sign(owner.secret, nonce)}
    assert (await client.post("/api/v1/token", json=login)).status_code == 200


async def test_a_busy_write_connection_answers_503_in_each_error_format(app, client, auth, db_url) -> None:  # noqa: ANN001
    if not is_sqlite(db_url):
        pytest.skip("PostgreSQL has a pool of connections to wait for; SQLite's single writer is what queues")
    async with app.state.context.sessions() as writer:
        await writer.execute(text("UPDATE organizations SET name = name WHERE id = 1"))
        response = await client.post("/api/v1/org", json={"name": "queued"}, headers=auth)
        assert_busy(response)
        assert response.json()["metadata"]["code"] == "temporarily_unavailable"
        # Well-formed enough to reach the client lookup, the endpoint's first database access.
        assertion = ".".join(b64url(part) for part in ({"alg": "RS256"}, {"iss": "no-such-client"})) + ".sig"
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        token = await client.post("/prod/incoming/token", data=form)
        assert_busy(token)
        assert token.json()["error"] == "temporarily_unavailable"
        await writer.rollback()


async def test_the_sync_webhook_wait_reads_beside_a_held_write_transaction(app, client, auth) -> None:  # noqa: ANN001
    from ihub.incoming.webhook import wait_for

    definition = {"connections": [], "flows": [MANUAL_FLOW]}
    response = await client.post("/api/v1/template/org/1", json={"name": "w", "definition": definition}, headers=auth)
    template_id = response.json()["templates"][0]["id"]
    response = await client.post("/api/v1/project/org/1", json={"name": "w", "templateId": template_id}, headers=auth)
    flow_id = response.json()["projects"][0]["flows"][0]["id"]
    run_id = (await client.post(f"/api/v1/flow/{flow_id}/run", json={}, headers=auth)).json()["runId"]
    context = app.state.context
    assert await wait_for(context, int(run_id), 60) is not None  # executed by the app's own executor
    async with context.sessions() as writer:
        await writer.execute(text("UPDATE organizations SET name = name WHERE id = 1"))
        # The poll a waiting sync caller makes must not queue behind the writer (it would time out at 1 s).
        outcome = await wait_for(context, int(run_id), 30)
        assert outcome is not None and outcome.status == "succeeded"
        await writer.rollback()
