"""Event webhooks end to end, in process: a receiver on 127.0.0.1 verifies every request with an independent
implementation of the Standard Webhooks scheme (event_receiver.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from event_receiver import InvalidSignature, received, verify, wait_for, wait_for_async
from flowkit import Kit
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select

from ihub.egress import egress_client, policy_from_settings
from ihub.events.models import EventDelivery, EventEndpoint

pytestmark = pytest.mark.anyio


def failing_flow(target: str) -> dict[str, Any]:
    """A manual flow whose one http step gets a 500 from `target` and fails the run (one attempt by default)."""
    step = {"id": "call", "type": "http", "method": "POST", "url": target}
    return {"connections": [], "flows": [{"key": "f", "trigger": "manual", "steps": [step]}]}


async def create_endpoint(
    client: httpx.AsyncClient, auth: dict[str, str], org_id: str, url: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/event-endpoint/org/{org_id}", json={"url": url, **body}, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()["endpoints"][0]


async def count_rows(app: Any, model: Any) -> int:
    async with app.state.context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def deliveries(client: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str, **params: str) -> list[Any]:
    response = await client.get(f"/api/v1/event-endpoint/{endpoint_id}/deliveries", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


async def attempted(client: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str) -> list[Any]:
    """The endpoint's deliveries once the newest one has been attempted at least once."""
    rows = await deliveries(client, auth, endpoint_id)
    return rows if rows and rows[0]["attempts"] >= 1 else []


async def delivered(client: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str) -> list[Any]:
    """The endpoint's deliveries once all of them are recorded as delivered."""
    rows = await deliveries(client, auth, endpoint_id)
    return rows if rows and all(row["status"] == "delivered" for row in rows) else []


def events_of(server: HTTPServer, secret: str, path: str = "/hook") -> list[tuple[str, dict[str, Any]]]:
    """(webhook-id, event) of every request the receiver got, each verified (InvalidSignature fails the test)."""
    return [(r.headers["webhook-id"], verify(secret, r.headers, r.get_data())) for r in received(server, path)]


async def test_a_failed_run_is_delivered_as_a_signed_run_failed_event(
    kit: Kit, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/target").respond_with_data("down", status=500)
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    endpoint = await create_endpoint(client, auth, "1", httpserver.url_for("/hook"), eventTypes=["run.failed"])
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")

    project = await kit.project(failing_flow(httpserver.url_for("/target")))
    run_id = await kit.trigger(kit.flow_id(project, "f"), {})
    run = await kit.wait(run_id)
    assert run["status"] == "failed"

    events = await wait_for(lambda: events_of(httpserver, secret))
    [(message_id, event)] = events
    assert message_id.startswith("msg_")
    assert event["type"] == "run.failed"
    assert event["data"]["runId"] == run_id
    assert event["data"]["projectId"] == project["id"] and event["data"]["flowKey"] == "f"
    assert event["data"]["orgId"] == "1" and "500" in event["data"]["error"]
    # The signature binds the body: one changed byte and the independent verifier refuses it.
    request = received(httpserver)[0]
    with pytest.raises(InvalidSignature):
        verify(secret, request.headers, request.get_data().replace(b"run.failed", b"run.faile_"))
    with pytest.raises(InvalidSignature):
        verify("whsec_" + "A" * 44, request.headers, request.get_data())
    [listed] = await deliveries(client, auth, endpoint["id"])
    assert listed["webhookId"] == message_id and listed["type"] == "run.failed"


async def test_subscriptions_cover_the_subtree_not_siblings(
    kit: Kit, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/parent").respond_with_data("", status=200)
    httpserver.expect_request("/sibling").respond_with_data("", status=200)
    parent = await kit.org()
    child, sibling = await kit.org(parent), await kit.org(parent)
    on_parent = await create_endpoint(client, auth, parent, httpserver.url_for("/parent"), eventTypes=["user.created"])
    await create_endpoint(client, auth, sibling, httpserver.url_for("/sibling"), eventTypes=["user.created"])

    # All or nothing: the second entry repeats the email, the request rolls back, and so do its events.
    users = [{"name": "N", "email": "n@example.com", "role": "Member"}, {"name": "M", "email": "n@example.com"}]
    response = await client.post(f"/api/v1/user/org/{child}", json=users, headers=auth)
    assert response.status_code == 400, response.text
    response = await client.post(f"/api/v1/user/org/{child}", json=users[:1], headers=auth)
    assert response.status_code == 200, response.text
    user_id = response.json()["users"][0]["id"]

    [(_, event)] = await wait_for(lambda: events_of(httpserver, on_parent["secret"], "/parent"))
    assert event["type"] == "user.created"
    assert event["data"] == {"userId": user_id, "orgId": child, "role": "Member", "byUserId": event["data"]["byUserId"]}
    assert "n@example.com" not in str(event)
    rows = await wait_for_async(lambda: delivered(client, auth, on_parent["id"]))
    assert len(rows) == 1  # the rolled-back request left no delivery behind
    assert received(httpserver, "/sibling") == []


async def test_a_500_is_retried_under_the_same_webhook_id_and_a_resend_keeps_it(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request("/hook").respond_with_data("busy", status=500)
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    endpoint = await create_endpoint(client, auth, "1", httpserver.url_for("/hook"))

    response = await client.post(f"/api/v1/event-endpoint/{endpoint['id']}/test", headers=auth)
    assert response.status_code == 202, response.text
    delivery_id = response.json()["deliveries"][0]["id"]

    events = await wait_for(lambda: len(received(httpserver)) >= 2 and events_of(httpserver, endpoint["secret"]))
    assert [r.status_code for _, r in httpserver.log] == [500, 200]
    (first_id, first), (second_id, second) = events
    assert first_id == second_id and first == second and first["type"] == "endpoint.test"
    # The receiver answered; the hub records the answer a moment later.
    [row] = await wait_for_async(lambda: delivered(client, auth, endpoint["id"]))
    assert row["attempts"] == 2 and row["webhookId"] == first_id

    response = await client.post(f"/api/v1/event-delivery/{delivery_id}/resend", headers=auth)
    assert response.status_code == 202, response.text
    events = await wait_for(lambda: len(received(httpserver)) >= 3 and events_of(httpserver, endpoint["secret"]))
    assert {message_id for message_id, _ in events} == {first_id}
    assert await count_rows(app, EventDelivery) == 1


async def test_the_egress_policy_refuses_endpoints_at_registration_and_never_connects_to_them(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    endpoint = await create_endpoint(client, auth, "1", httpserver.url_for("/hook"))
    # The operator empties the allow-list (the default policy): loopback is refused from now on.
    context = app.state.context
    context.settings = context.settings.model_copy(update={"egress_allow": []})
    deliverer = app.state.event_deliverer
    await deliverer.http.aclose()
    deliverer.http = egress_client(policy_from_settings(context.settings))

    for url, code in [
        ("http://127.0.0.1:9/hook", "egress_refused"),
        ("https://[::1]/hook", "egress_refused"),
        ("https://localhost/hook", "egress_refused"),
        ("http://receiver.example.com/hook", "https_required"),
        ("https://user:pw@receiver.example.com/hook", "invalid_request"),
        ("ftp://receiver.example.com/hook", "invalid_request"),
    ]:
        response = await client.post("/api/v1/event-endpoint/org/1", json={"url": url}, headers=auth)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["metadata"]["code"] == code, url
    assert await count_rows(app, EventEndpoint) == 1

    # The endpoint registered before: every attempt checks the address it would connect to, and refuses.
    response = await client.post(f"/api/v1/event-endpoint/{endpoint['id']}/test", headers=auth)
    assert response.status_code == 202, response.text
    rows = await wait_for_async(lambda: attempted(client, auth, endpoint["id"]))
    assert "egress policy" in rows[0]["lastError"] and rows[0]["lastStatusCode"] is None
    assert rows[0]["status"] == "pending"  # retried later: the operator may open the address again
    assert httpserver.log == []
