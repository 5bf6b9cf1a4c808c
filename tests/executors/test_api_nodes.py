"""Two `ihub serve --no-worker` API nodes on one PostgreSQL database, as behind a load balancer.

PostgreSQL only: SQLite is the single-process embedded default (one file, one node); more than one API node is
a PostgreSQL deployment (IHUB_EXECUTOR=procrastinate, `ihub worker` executing runs).

What one node has seen, the other knows: a nonce used on A is refused on B, an assertion (jti) used on A is
refused on B, and failed logins on A count towards the limit on B. And a node SIGKILLed while webhooks pour in
loses nothing it acknowledged: every 202 has its run, which a worker executes exactly once.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from processes import Api, free_port, spawn, start_hub, stop, wait_healthy

pytestmark = pytest.mark.slow

FLOW = {
    "key": "hook",
    "trigger": {"type": "jwt"},
    "steps": [{"id": "keep", "type": "map", "set": {"n": "{{ trigger.body.n }}"}}],
}
DEFINITION = {"connections": [], "flows": [FLOW]}


@dataclass
class Nodes:
    a: str
    b: str
    public_url: str
    api: Api
    env: dict[str, str]
    database_url: str
    processes: list[Any]


@pytest.fixture
def nodes(tmp_path: Path, empty_postgres: str) -> Iterator[Nodes]:
    """Node A (`ihub init` + serve) and node B (serve only) on the same database, key and public URL."""
    env = {
        "IHUB_DATABASE_URL": empty_postgres,
        "IHUB_EXECUTOR": "procrastinate",
        "IHUB_TOKEN_FAILURES_PER_USER": "3",
        "IHUB_POLL_INTERVAL": "0.2",
    }
    (tmp_path / "a").mkdir()
    hub_a = start_hub(tmp_path / "a", env=env, args=("--no-worker",))
    port_b = free_port()
    # Both answer for one public URL (the load balancer's): assertions carry it as their audience.
    env_b = {**hub_a.env, "IHUB_PORT": str(port_b), "IHUB_DATA_DIR": str(tmp_path / "b")}
    url_b = f"http://127.0.0.1:{port_b}"
    process_b = spawn(["serve", "--no-worker"], env_b, tmp_path / "b.log")
    processes = [hub_a.process, process_b]
    try:
        wait_healthy(url_b, process_b, tmp_path / "b.log")
        yield Nodes(
            hub_a.url,
            url_b,
            hub_a.env["IHUB_PUBLIC_URL"],
            Api(hub_a.url, hub_a.user_id, hub_a.secret),
            env_b,
            empty_postgres,
            processes,
        )
        for process in processes:
            assert process.poll() in (None, -signal.SIGKILL), "an API node died on its own"
    finally:
        for process in processes:
            stop(process)


def login_body(user_id: str, secret: str, nonce: str) -> dict[str, str]:
    return {"userId": user_id, "nonce": nonce, "hash": hashlib.sha256((secret + nonce).encode()).hexdigest()}


@dataclass
class Client:
    iss: str
    sub: str
    kid: str
    private_key: str

    def assertion(self, audience: str, jti: str | None = None) -> str:
        now = int(time.time())
        claims = {"iss": self.iss, "sub": self.sub, "aud": audience, "iat": now, "exp": now + 300}
        if jti:
            claims["jti"] = jti
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


def trigger_client(nodes: Nodes) -> Client:
    project = nodes.api.project(DEFINITION, [])
    flow_id = project["flows"][0]["id"]
    response = nodes.api.http.post(f"/api/v1/flow/{flow_id}/trigger/jwt", json={"generateKey": True})
    assert response.status_code == 200, response.text
    created = response.json()["triggers"][0]
    return Client(created["iss"], created["sub"], created["kid"], created["privateKey"])


def new_user(nodes: Nodes) -> tuple[str, str]:
    email = f"m-{uuid.uuid4().hex[:8]}@example.com"
    response = nodes.api.http.post("/api/v1/user/org/1", json=[{"name": "M", "email": email, "role": "Member"}])
    assert response.status_code == 200, response.text
    user_id = response.json()["users"][0]["id"]
    response = nodes.api.http.post(f"/api/v1/user/{user_id}/key")
    assert response.status_code == 200, response.text
    return user_id, response.json()["keys"][0]["secret"]


def test_nonce_used_on_one_node_is_refused_on_the_other(nodes: Nodes) -> None:
    user_id, secret = new_user(nodes)
    body = login_body(user_id, secret, uuid.uuid4().hex)
    assert httpx.post(nodes.a + "/api/v1/token", json=body).status_code == 200
    again = httpx.post(nodes.b + "/api/v1/token", json=body)
    assert again.status_code == 401, again.text
    assert again.json()["metadata"]["code"] == "nonce_reused"
    # A fresh nonce works on B: it is the nonce that is refused, not the user.
    assert httpx.post(nodes.b + "/api/v1/token", json=login_body(user_id, secret, uuid.uuid4().hex)).status_code == 200


def test_assertion_used_on_one_node_is_refused_on_the_other(nodes: Nodes) -> None:
    client = trigger_client(nodes)
    audience = nodes.public_url + "/prod/incoming/token"
    assertion = client.assertion(audience, jti=uuid.uuid4().hex)
    form = {"grant_type": "urn:ihub:jwt:bearer", "assertion": assertion}
    first = httpx.post(nodes.a + "/prod/incoming/token", json=form)
    assert first.status_code == 200, first.text
    replay = httpx.post(nodes.b + "/prod/incoming/token", json=form)
    assert replay.status_code == 400, replay.text
    assert replay.json()["error"] == "invalid_grant" and "jti" in replay.json()["error_description"]
    # The access token A issued is good on B (one key for every node).
    token = first.json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    hook = httpx.post(nodes.b + "/prod/incoming/webhook/jwt", json={"n": 1}, headers=bearer)
    assert hook.status_code == 202, hook.text


def test_failed_logins_on_one_node_count_on_the_other(nodes: Nodes) -> None:
    user_id, secret = new_user(nodes)
    for _ in range(3):  # IHUB_TOKEN_FAILURES_PER_USER=3
        wrong = login_body(user_id, "not-the-secret", uuid.uuid4().hex)
        assert httpx.post(nodes.a + "/api/v1/token", json=wrong).status_code == 401
    limited = httpx.post(nodes.b + "/api/v1/token", json=login_body(user_id, "not-the-secret", uuid.uuid4().hex))
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["Retry-After"]) > 0


def test_sigkill_of_an_api_node_under_webhook_load_loses_nothing_acknowledged(nodes: Nodes, tmp_path: Path) -> None:
    client = trigger_client(nodes)
    audience = nodes.public_url + "/prod/incoming/token"
    response = httpx.post(
        nodes.a + "/prod/incoming/token",
        json={"grant_type": "urn:ihub:jwt:bearer", "assertion": client.assertion(audience)},
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]

    acknowledged: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def fire(thread: int) -> None:
        with httpx.Client(base_url=nodes.a, timeout=10) as http:
            for n in range(1000):
                try:
                    answer = http.post(
                        "/prod/incoming/webhook/jwt",
                        json={"n": f"{thread}-{n}"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError:
                    return  # the node is gone
                if answer.status_code == 202:
                    with lock:
                        acknowledged.append(answer.json()["runId"])
                        if len(acknowledged) >= 60:
                            enough.set()

    threads = [threading.Thread(target=fire, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    assert enough.wait(120), f"only {len(acknowledged)} webhooks acknowledged"
    nodes.processes[0].send_signal(signal.SIGKILL)  # node A, mid-load
    for thread in threads:
        thread.join(30)
    with lock:
        acked = set(acknowledged)
    assert len(acked) == len(acknowledged) >= 60

    # A worker (started after the crash) executes whatever the dead node acknowledged.
    worker = spawn(["worker"], nodes.env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while True:
            statuses = run_statuses(nodes.database_url, acked)
            if len(statuses) == len(acked) and set(statuses.values()) == {"succeeded"}:
                break
            if time.monotonic() > deadline:
                missing = acked - statuses.keys()
                pending = {k: v for k, v in statuses.items() if v != "succeeded"}
                raise AssertionError(f"{len(missing)} acknowledged runs missing, {len(pending)} not done: {pending}")
            time.sleep(0.5)
    finally:
        stop(worker)
    # Exactly once: each acknowledged run has one record of its step, on its first attempt.
    with psycopg.connect(libpq(nodes.database_url)) as conn:
        rows = conn.execute(
            "SELECT run_id, count(*) FROM run_steps WHERE run_id = ANY(%s) AND step_id = 'keep' GROUP BY run_id",
            ([int(r) for r in acked],),
        ).fetchall()
        attempts = conn.execute("SELECT max(attempt) FROM runs WHERE id = ANY(%s)", ([int(r) for r in acked],))
        assert attempts.fetchone()[0] in (0, 1)
    assert {str(run_id) for run_id, _ in rows} == acked
    assert {count for _, count in rows} == {1}
    print(f"\n{len(acked)} webhooks acknowledged before the SIGKILL; all executed once")


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def run_statuses(database_url: str, run_ids: set[str]) -> dict[str, str]:
    with psycopg.connect(libpq(database_url)) as conn:
        rows = conn.execute("SELECT id, status FROM runs WHERE id = ANY(%s)", ([int(r) for r in run_ids],)).fetchall()
    return {str(run_id): status for run_id, status in rows}
