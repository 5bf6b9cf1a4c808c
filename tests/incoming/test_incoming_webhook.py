"""POST /{env}/incoming/webhook/jwt: the run is committed before the answer; RFC 6750 §3 errors."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from incoming_support import SEED_TICKET, Incoming, Trigger, within_client_cache_ttl
from sqlalchemy import func, select, update

from ihub.db.base import utcnow
from ihub.incoming.access import STATE_TTL_SECONDS, AccessTokens
from ihub.incoming.models import IdempotencyRecord, TriggerClient
from ihub.runs.models import Run

pytestmark = pytest.mark.anyio


async def run_row(app: Any, run_id: str) -> Run:
    async with app.state.context.sessions() as session:
        run = await session.get(Run, int(run_id))
    assert run is not None
    return run


async def count_runs(app: Any) -> int:
    async with app.state.context.sessions() as session:
        return await session.scalar(select(func.count()).select_from(Run)) or 0


def assert_invalid_token(response: httpx.Response, mentions: str = "") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
    assert mentions.lower() in response.json()["error_description"].lower()
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="ihub", error="invalid_token"'), challenge


async def test_seed_payload_is_committed_before_the_202(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    response = await incoming.webhook(token, SEED_TICKET, headers={"X-Source": "servicenow"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["flowId"] == trigger.sub and body["status"] == "queued"
    run = await run_row(app, body["runId"])
    assert run.flow_id == int(trigger.sub) and run.trigger_type == "jwt"
    assert run.trigger["body"] == SEED_TICKET
    assert run.trigger["contentType"] == "application/json"
    assert run.trigger["env"] == "prod" and run.trigger["clientId"] == trigger.iss
    assert run.trigger["headers"]["x-source"] == "servicenow"
    assert "authorization" not in run.trigger["headers"]
    assert run.trigger["receivedAt"]


async def test_default_path_accepts_the_default_env_token(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    # The seed's text posts to /incoming/webhook/jwt with a token from /prod/incoming/token.
    token = await incoming.access_token(trigger)
    response = await incoming.webhook(token, SEED_TICKET, path="/incoming/webhook/jwt")
    assert response.status_code == 202, response.text
    assert (await run_row(app, response.json()["runId"])).trigger["env"] == "prod"


async def test_env_mismatch_is_refused(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    test_token = await incoming.access_token(trigger, path="/test/incoming/token")
    assert_invalid_token(await incoming.webhook(test_token, SEED_TICKET), "env test")
    assert_invalid_token(await incoming.webhook(test_token, SEED_TICKET, path="/incoming/webhook/jwt"), "env")
    response = await incoming.webhook(test_token, SEED_TICKET, path="/test/incoming/webhook/jwt")
    assert response.status_code == 202
    assert (await run_row(app, response.json()["runId"])).trigger["env"] == "test"
    response = await incoming.webhook(test_token, SEED_TICKET, path="/stage/incoming/webhook/jwt")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_missing_and_bad_tokens(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        response = await incoming.client.post("/prod/incoming/webhook/jwt", json=SEED_TICKET, headers=headers)
        assert response.status_code == 401
        # RFC 6750 §3.1: a request without credentials gets the bare challenge, no error code.
        assert response.headers["www-authenticate"] == 'Bearer realm="ihub"'
    assert_invalid_token(await incoming.webhook("garbage", SEED_TICKET))
    token = await incoming.access_token(trigger)
    head, claims, sig = token.split(".")
    assert_invalid_token(await incoming.webhook(f"{head}.{claims}.{sig[:-4]}AAAA", SEED_TICKET), "signature")
    # The client's own RS256 assertion is not an access token.
    assert_invalid_token(await incoming.webhook(trigger.assertion(), SEED_TICKET))
    # Nor is an unsigned copy of a real one (alg none, same kid and claims).
    kid = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
    unsigned_head = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": kid}).encode()).rstrip(b"=").decode()
    assert_invalid_token(await incoming.webhook(f"{unsigned_head}.{claims}.", SEED_TICKET))
    assert await count_runs(app) == 0


async def test_expired_or_foreign_tokens(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    context = app.state.context
    ours = AccessTokens(context.master_key, 3599)
    old = ours.mint(client_id=trigger.iss, flow_id=int(trigger.sub), env="prod", key_id="", now=time.time() - 3600)
    assert_invalid_token(await incoming.webhook(old, SEED_TICKET), "expired")
    foreign = AccessTokens("another-hub-master-key-" + "y" * 30, 3599)
    token = foreign.mint(client_id=trigger.iss, flow_id=int(trigger.sub), env="prod", key_id="")
    assert_invalid_token(await incoming.webhook(token, SEED_TICKET), "not issued by this hub")


async def test_other_content_types_are_stored_raw(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    cases = [
        ("application/xml", b"<ticket><key>SERVICENOW-1</key></ticket>", "<ticket><key>SERVICENOW-1</key></ticket>"),
        ("application/x-www-form-urlencoded", b"issueKey=SERVICENOW-1&summary=x", "issueKey=SERVICENOW-1&summary=x"),
        ("text/plain; charset=utf-8", "hej då".encode(), "hej då"),
    ]
    for content_type, raw, stored in cases:
        response = await incoming.webhook(token, content=raw, headers={"Content-Type": content_type})
        assert response.status_code == 202, response.text
        run = await run_row(app, response.json()["runId"])
        assert run.trigger["body"] == stored
        assert run.trigger["contentType"] == content_type
    response = await incoming.webhook(
        token, content=b"\xff\xfe\x00", headers={"Content-Type": "application/octet-stream"}
    )
    run = await run_row(app, response.json()["runId"])
    assert run.trigger["bodyEncoding"] == "base64" and run.trigger["body"] == "//4A"
    response = await incoming.webhook(token, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_body_size_cap(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    limit = app.state.context.settings.max_body_bytes
    big = b'{"x": "' + b"a" * limit + b'"}'
    response = await incoming.webhook(token, content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"

    async def chunks():  # no Content-Length: the cap holds while reading
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536

    response = await incoming.webhook(token, content=chunks(), headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert await count_runs(app) == 0
    fits = b'{"x": "' + b"a" * (limit - 100) + b'"}'
    response = await incoming.webhook(token, content=fits, headers={"Content-Type": "application/json"})
    assert response.status_code == 202


async def test_idempotency_key(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    first = await incoming.webhook(token, SEED_TICKET, headers={"Idempotency-Key": "INC0010001"})
    again = await incoming.webhook(token, {"other": 1}, headers={"Idempotency-Key": "INC0010001"})
    assert first.status_code == again.status_code == 202
    assert again.json()["runId"] == first.json()["runId"]
    assert await count_runs(app) == 1
    other = await incoming.webhook(token, SEED_TICKET, headers={"Idempotency-Key": "INC0010002"})
    assert other.json()["runId"] != first.json()["runId"]
    assert await count_runs(app) == 2

    # Another client's identical key is its own.
    second_client = await incoming.trigger()
    token2 = await incoming.access_token(second_client)
    response = await incoming.webhook(token2, SEED_TICKET, headers={"Idempotency-Key": "INC0010001"})
    assert response.json()["runId"] != first.json()["runId"]

    # After 24 hours the key starts a new run.
    async with app.state.context.sessions() as session:
        await session.execute(update(IdempotencyRecord).values(created_at=utcnow() - timedelta(hours=25)))
        await session.commit()
    later = await incoming.webhook(token, SEED_TICKET, headers={"Idempotency-Key": "INC0010001"})
    assert later.json()["runId"] not in (first.json()["runId"], response.json()["runId"])
    assert (await incoming.webhook(token, SEED_TICKET, headers={"Idempotency-Key": "x" * 256})).status_code == 400


async def test_concurrent_idempotent_requests_start_one_run(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    responses = await asyncio.gather(
        *(incoming.webhook(token, SEED_TICKET, headers={"Idempotency-Key": "race-1"}) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["runId"] for r in responses}) == 1
    assert await count_runs(app) == 1


async def test_disabling_the_trigger_stops_its_tokens(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    assert (await incoming.webhook(token, SEED_TICKET)).status_code == 202
    url = f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}"
    assert (await incoming.client.put(url, json={"enabled": False}, headers=incoming.auth)).status_code == 200
    assert_invalid_token(await incoming.webhook(token, SEED_TICKET), "disabled")
    assert (await incoming.client.put(url, json={"enabled": True}, headers=incoming.auth)).status_code == 200
    assert (await incoming.webhook(token, SEED_TICKET)).status_code == 202


async def test_disabling_elsewhere_takes_effect_within_five_seconds(
    app: Any, incoming: Incoming, trigger: Trigger, db_url: str
) -> None:
    """Another API node disables the client (a direct database change this node is not told about)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the cache is backend-independent; one backend is enough for a 5 s wait")
    token = await incoming.access_token(trigger)
    assert (await incoming.webhook(token, SEED_TICKET)).status_code == 202
    async with app.state.context.sessions() as session:
        await session.execute(update(TriggerClient).values(enabled=False))
        await session.commit()
    assert STATE_TTL_SECONDS <= 5
    await within_client_cache_ttl(lambda: incoming.webhook(token, SEED_TICKET), 401)
    assert_invalid_token(await incoming.webhook(token, SEED_TICKET), "disabled")


async def test_revoked_key_and_deleted_client_stop_their_tokens(incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    rotated = (await incoming.create(trigger.sub, {"generateKey": True, "iss": trigger.iss})).json()["triggers"][0]
    base = f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}"
    response = await incoming.client.delete(f"{base}/key/{trigger.kid}", headers=incoming.auth)
    assert response.status_code == 200
    assert_invalid_token(await incoming.webhook(token, SEED_TICKET), "revoked")

    from incoming_support import sign

    fresh = await incoming.token(sign(rotated["privateKey"], trigger.claims()))
    new_token = fresh.json()["access_token"]
    assert (await incoming.webhook(new_token, SEED_TICKET)).status_code == 202
    assert (await incoming.client.delete(base, headers=incoming.auth)).status_code == 200
    assert_invalid_token(await incoming.webhook(new_token, SEED_TICKET), "deleted")
    assert (await incoming.client.get(f"/api/v1/flow/{trigger.sub}/trigger/jwt", headers=incoming.auth)).json() == {
        "triggers": []
    }


async def test_sync_flow_answers_with_the_respond_result(idle_app: Any, idle_client: httpx.AsyncClient) -> None:
    """The webhook waits on the run row, whoever executes it; here the test plays the executor."""
    from incoming_support import Incoming as Driver
    from incoming_support import get_owner_auth

    hub = Driver(idle_client, await get_owner_auth(idle_app, idle_client))
    await hub.make_flows()
    trigger = await hub.trigger("echo")
    token = await hub.access_token(trigger)

    async def execute_when_queued() -> None:
        for _ in range(200):
            async with idle_app.state.context.sessions() as session:
                run = await session.scalar(select(Run).where(Run.status == "queued"))
                if run is not None:
                    run.status = "succeeded"
                    run.result = {"status": 201, "body": {"got": run.trigger["body"]["summary"]}}
                    await session.commit()
                    return
            await asyncio.sleep(0.02)

    worker = asyncio.create_task(execute_when_queued())
    response = await hub.webhook(token, SEED_TICKET)
    await worker
    assert response.status_code == 201, response.text
    assert response.json() == {"got": "Ticket from test case"}
    assert response.headers["x-ihub-run-id"]

    # Nobody executes this one: after the flow's timeout (2 s) the caller gets the run id to follow.
    started = time.monotonic()
    response = await hub.webhook(token, SEED_TICKET)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "running" and body["timedOut"] is True and body["runId"]
    # At least the flow's 2 s, and far below the 30 s default (DEFAULT_SYNC_TIMEOUT): the flow's own timeout ended
    # the wait. The upper bound is generous because a loaded machine (xdist workers, other jobs) delays the answer.
    assert 1.9 <= time.monotonic() - started < 20


async def test_sync_flow_through_the_engine(incoming: Incoming) -> None:
    """The real local executor runs the flow's respond step; the caller gets its status and body."""
    trigger = await incoming.trigger("echo")
    token = await incoming.access_token(trigger)
    response = await incoming.webhook(token, SEED_TICKET)
    assert response.status_code == 201, response.text
    assert response.json() == {"got": "Ticket from test case"}


async def test_concurrent_webhooks_each_get_their_own_committed_run(
    app: Any, incoming: Incoming, trigger: Trigger
) -> None:
    """Webhooks arriving together share commits; each still gets its own run, committed before its 202."""
    token = await incoming.access_token(trigger)
    bodies = [{**SEED_TICKET, "issueKey": f"SERVICENOW-{n}"} for n in range(40)]
    responses = await asyncio.gather(*(incoming.webhook(token, body) for body in bodies))
    assert {r.status_code for r in responses} == {202}
    run_ids = [r.json()["runId"] for r in responses]
    assert len(set(run_ids)) == 40
    for body, run_id in zip(bodies, run_ids, strict=True):
        assert (await run_row(app, run_id)).trigger["body"] == body


async def test_deleting_the_project_stops_its_tokens(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    assert (await incoming.webhook(token, SEED_TICKET)).status_code == 202  # the client's state is now cached
    response = await incoming.client.delete(f"/api/v1/project/{incoming.project_id}", headers=incoming.auth)
    assert response.status_code == 200, response.text
    assert_invalid_token(await incoming.webhook(token, SEED_TICKET))
    assert_invalid_token(await incoming.webhook(token, SEED_TICKET, headers={"Idempotency-Key": "k"}))
    assert await count_runs(app) == 0
