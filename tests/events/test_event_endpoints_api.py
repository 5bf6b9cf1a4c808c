"""Event endpoints through /api/v1: the secret shown once, rotation, permissions and tenancy, the outbox's
transaction, giving up and disabling. The receiver on 127.0.0.1 verifies with event_receiver.verify."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from event_receiver import InvalidSignature, received, verify, wait_for, wait_for_async
from flowkit import Kit
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select, update

from ihub.db.base import utcnow
from ihub.events import service
from ihub.events.models import EventDelivery, EventEndpoint

pytestmark = pytest.mark.anyio


async def create_endpoint(
    client: httpx.AsyncClient, auth: dict[str, str], org_id: str, url: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/event-endpoint/org/{org_id}", json={"url": url, **body}, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()["endpoints"][0]


async def endpoint_rows(app: Any) -> list[tuple[Any, ...]]:
    async with app.state.context.sessions() as session:
        rows = await session.execute(
            select(EventEndpoint.id, EventEndpoint.url, EventEndpoint.event_types, EventEndpoint.enabled).order_by(
                EventEndpoint.id
            )
        )
        return [tuple(row) for row in rows]


async def delivery_count(app: Any) -> int:
    async with app.state.context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(EventDelivery)) or 0)


async def test_the_secret_is_shown_once_and_a_rotation_signs_with_both_secrets(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    created = await create_endpoint(client, auth, "1", httpserver.url_for("/hook"), description="ops")
    old_secret = created["secret"]
    assert created["eventTypes"] and "run.succeeded" not in created["eventTypes"]  # opt-in
    for path in (f"/api/v1/event-endpoint/{created['id']}", "/api/v1/event-endpoint/org/1"):
        response = await client.get(path, headers=auth)
        assert response.status_code == 200
        assert old_secret not in response.text and response.json()["endpoints"][0]["secret"] is None
    async with app.state.context.sessions() as session:
        sealed = await session.scalar(select(EventEndpoint.secret_sealed))
    assert sealed and old_secret not in sealed and old_secret.removeprefix("whsec_") not in sealed

    response = await client.post(f"/api/v1/event-endpoint/{created['id']}/rotate-secret", headers=auth)
    assert response.status_code == 200, response.text
    new_secret = response.json()["endpoints"][0]["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret

    response = await client.post(f"/api/v1/event-endpoint/{created['id']}/test", headers=auth)
    assert response.status_code == 202, response.text
    [request] = await wait_for(lambda: received(httpserver))
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    # A receiver with either secret accepts the delivery during the overlap.
    assert verify(new_secret, request.headers, request.get_data())["type"] == "endpoint.test"
    assert verify(old_secret, request.headers, request.get_data())["type"] == "endpoint.test"

    # Rotating again within the overlap drops the oldest (a leaked secret can be cut off at once): the two
    # newest sign.
    response = await client.post(f"/api/v1/event-endpoint/{created['id']}/rotate-secret", headers=auth)
    newest = response.json()["endpoints"][0]["secret"]
    httpserver.clear_log()
    response = await client.post(f"/api/v1/event-endpoint/{created['id']}/test", headers=auth)
    [request] = await wait_for(lambda: received(httpserver))
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (newest, new_secret):
        assert verify(secret, request.headers, request.get_data())["type"] == "endpoint.test"
    with pytest.raises(InvalidSignature):
        verify(old_secret, request.headers, request.get_data())


async def test_only_owners_and_admins_manage_and_other_tenants_get_404(
    kit: Kit, app: Any, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    tenant_a, tenant_b = await kit.org(), await kit.org()
    endpoint = await create_endpoint(client, auth, tenant_a, httpserver.url_for("/hook"))
    member_a = await kit.login(tenant_a, "Member")
    admin_a = await kit.login(tenant_a, "Admin")
    admin_b = await kit.login(tenant_b, "Admin")
    before, sent = await endpoint_rows(app), await delivery_count(app)  # user.created of these logins
    eid = endpoint["id"]

    response = await client.post(
        f"/api/v1/event-endpoint/org/{tenant_a}", json={"url": httpserver.url_for("/x")}, headers=member_a
    )
    assert response.status_code == 403, response.text
    response = await client.put(f"/api/v1/event-endpoint/{eid}", json={"enabled": False}, headers=member_a)
    assert response.status_code == 403
    # Another tenant learns nothing, not even that the endpoint exists.
    for method, path in [
        ("GET", f"/api/v1/event-endpoint/{eid}"),
        ("PUT", f"/api/v1/event-endpoint/{eid}"),
        ("DELETE", f"/api/v1/event-endpoint/{eid}"),
        ("POST", f"/api/v1/event-endpoint/{eid}/rotate-secret"),
        ("POST", f"/api/v1/event-endpoint/{eid}/test"),
        ("GET", f"/api/v1/event-endpoint/{eid}/deliveries"),
        ("GET", f"/api/v1/event-endpoint/org/{tenant_a}"),
        ("POST", f"/api/v1/event-endpoint/org/{tenant_a}"),
    ]:
        body = {"url": httpserver.url_for("/evil")}
        if "/org/" not in path:  # an update may also switch it off; a creation has no such field
            body["enabled"] = False
        response = await client.request(method, path, json=body, headers=admin_b)
        assert response.status_code == 404, (method, path, response.text)
    assert await endpoint_rows(app) == before
    assert await delivery_count(app) == sent

    # A member reads; the tenant's admin changes it, and the change is there.
    response = await client.get(f"/api/v1/event-endpoint/{eid}/deliveries", headers=member_a)
    assert response.status_code == 200
    response = await client.put(f"/api/v1/event-endpoint/{eid}", json={"eventTypes": ["run.failed"]}, headers=admin_a)
    assert response.status_code == 200, response.text
    assert (await endpoint_rows(app))[0][2] == ["run.failed"]
    response = await client.put(f"/api/v1/event-endpoint/{eid}", json={"eventTypes": ["run.nope"]}, headers=admin_a)
    assert response.status_code == 400 and "run.nope" in response.text

    response = await client.post(f"/api/v1/event-endpoint/{eid}/test", headers=admin_a)
    assert response.status_code == 202
    delivery_id = response.json()["deliveries"][0]["id"]
    response = await client.post(f"/api/v1/event-delivery/{delivery_id}/resend", headers=admin_b)
    assert response.status_code == 404
    response = await client.get(f"/api/v1/event-delivery/{delivery_id}", headers=admin_b)
    assert response.status_code == 404
    response = await client.delete(f"/api/v1/event-endpoint/{eid}", headers=admin_a)
    assert response.status_code == 200
    assert await endpoint_rows(app) == [] and await delivery_count(app) == 0


async def test_a_failing_endpoint_is_disabled_a_late_delivery_gives_up_and_old_ones_are_purged(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/down").respond_with_data("no", status=503)
    httpserver.expect_request("/other").respond_with_data("", status=200)
    failing = await create_endpoint(client, auth, "1", httpserver.url_for("/down"))
    other = await create_endpoint(client, auth, "1", httpserver.url_for("/other"))
    # The endpoint has failed for a day already (a clock moved on, as in production after 24 h of 503s).
    async with app.state.context.sessions() as session:
        await session.execute(
            update(EventEndpoint)
            .where(EventEndpoint.id == int(failing["id"]))
            .values(failing_since=utcnow() - timedelta(hours=25))
        )
        await session.commit()

    response = await client.post(f"/api/v1/event-endpoint/{failing['id']}/test", headers=auth)
    assert response.status_code == 202

    async def disabled() -> dict[str, Any] | None:
        response = await client.get(f"/api/v1/event-endpoint/{failing['id']}", headers=auth)
        endpoint: dict[str, Any] = response.json()["endpoints"][0]
        return endpoint if not endpoint["enabled"] else None

    endpoint = await wait_for_async(disabled)
    assert "24 h" in endpoint["disabledReason"] and endpoint["disabledAt"]
    response = await client.get(f"/api/v1/event-endpoint/{failing['id']}/deliveries", headers=auth)
    [row] = response.json()["deliveries"]
    assert row["status"] == "failed" and row["lastStatusCode"] == 503
    # The organization's other endpoint is told.
    [request] = await wait_for(lambda: received(httpserver, "/other"))
    event = verify(other["secret"], request.headers, request.get_data())
    assert event["type"] == "endpoint.disabled" and event["data"]["endpointId"] == failing["id"]
    # Where it pointed, not its path: a receiver URL may carry its own secret (Slack-style hooks).
    assert event["data"]["origin"] == httpserver.url_for("/").rstrip("/")
    assert "/down" not in json.dumps(event)
    # Re-sending to a disabled endpoint is refused until it is enabled again.
    response = await client.post(f"/api/v1/event-delivery/{row['id']}/resend", headers=auth)
    assert response.status_code == 409
    response = await client.put(f"/api/v1/event-endpoint/{failing['id']}", json={"enabled": True}, headers=auth)
    assert response.status_code == 200 and response.json()["endpoints"][0]["disabledReason"] is None

    # A delivery past its retry window is failed after its next failed attempt; the endpoint, whose failing
    # clock restarted when it was enabled, stays enabled.
    now = utcnow()
    async with app.state.context.sessions() as session:
        late = EventDelivery(
            message_id="msg_late",
            endpoint_id=int(failing["id"]),
            event_type="endpoint.test",
            body="{}",
            status="pending",
            next_attempt_at=now,
            give_up_at=now,
        )
        session.add(late)
        # Old finished deliveries, and an old pending one that is not due: only the finished ones are purged.
        old = now - timedelta(days=31)
        for status in ("delivered", "failed", "pending"):
            session.add(
                EventDelivery(
                    message_id=f"msg_old_{status}",
                    endpoint_id=int(other["id"]),
                    event_type="endpoint.test",
                    body="{}",
                    status=status,
                    created_at=old,
                    next_attempt_at=now + timedelta(days=1),
                    give_up_at=now + timedelta(days=1),
                )
            )
        await session.commit()

    async def late_failed() -> dict[str, Any] | None:
        response = await client.get(f"/api/v1/event-delivery/{late.id}", headers=auth)
        row: dict[str, Any] = response.json()["deliveries"][0]
        return row if row["status"] == "failed" else None

    row = await wait_for_async(late_failed)
    assert row["attempts"] == 1 and row["lastStatusCode"] == 503
    response = await client.get(f"/api/v1/event-endpoint/{failing['id']}", headers=auth)
    assert response.json()["endpoints"][0]["enabled"] is True

    assert await app.state.event_deliverer.purge() == 2
    async with app.state.context.sessions() as session:
        kept = set(
            await session.scalars(select(EventDelivery.message_id).where(EventDelivery.message_id.like("msg_old%")))
        )
    assert kept == {"msg_old_pending"}


async def test_project_and_trigger_changes_emit_their_events(
    kit: Kit, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    endpoint = await create_endpoint(client, auth, "1", httpserver.url_for("/hook"))
    org = await kit.org()
    flow = {"key": "in", "trigger": {"type": "jwt"}, "steps": [{"id": "stop", "type": "fail", "message": "x"}]}
    project = await kit.project({"connections": [], "flows": [flow]}, org_id=org)
    flow_id = kit.flow_id(project, "in")
    response = await client.post(f"/api/v1/flow/{flow_id}/trigger/jwt", json={"generateKey": True}, headers=auth)
    assert response.status_code == 200, response.text
    iss = response.json()["triggers"][0]["iss"]
    for _ in range(2):  # disabling twice is one event: only the change is
        response = await client.put(f"/api/v1/flow/{flow_id}/trigger/jwt/{iss}", json={"enabled": False}, headers=auth)
        assert response.status_code == 200, response.text
    response = await client.delete(f"/api/v1/project/{project['id']}", headers=auth)
    assert response.status_code == 200, response.text

    def events() -> list[dict[str, Any]]:
        found = [verify(endpoint["secret"], r.headers, r.get_data()) for r in received(httpserver)]
        return found if len(found) >= 3 else []

    by_type = {event["type"]: event["data"] for event in await wait_for(events)}
    assert len(received(httpserver)) == 3
    assert by_type["project.created"]["projectId"] == project["id"] and by_type["project.created"]["orgId"] == org
    assert by_type["trigger.disabled"] == {
        "clientId": iss,
        "flowId": flow_id,
        "flowKey": "in",
        "projectId": project["id"],
        "orgId": org,
    }
    assert by_type["project.deleted"]["projectId"] == project["id"]


async def test_hostile_input_gets_clear_400s_and_limits_hold(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    httpserver.expect_request(re.compile("^/hook")).respond_with_data("", status=200)
    url = httpserver.url_for("/hook")
    for body in [
        {"url": url + "\x00"},
        {"url": url + "/a b"},
        {"url": url + "/" + "a" * 2100},
        {"url": url, "eventTypes": ["x" * 100]},
        {"url": url, "eventTypes": []},
        {"url": url, "eventTypes": "run.failed" + ",run.failed" * 40},
        {"url": url, "description": "d" * 600},
        {"url": "not a url"},
        {"url": ["https://a.example"]},
        {"url": url + "#"},
        # Misspelt fields are refused, not ignored: `event_types` ignored would subscribe to every type.
        {"url": url, "event_types": ["run.failed"]},
        {"url": url, "enabled": False},
    ]:
        response = await client.post("/api/v1/event-endpoint/org/1", json=body, headers=auth)
        assert response.status_code == 400, (body, response.text)
    assert await endpoint_rows(app) == []
    created = [await create_endpoint(client, auth, "1", f"{url}/{i}") for i in range(20)]
    before = await endpoint_rows(app)
    for change in ({"enabeld": False}, {"event_types": ["run.failed"]}, {"url": url + "/x#"}):
        response = await client.put(f"/api/v1/event-endpoint/{created[0]['id']}", json=change, headers=auth)
        assert response.status_code == 400, (change, response.text)
    assert await endpoint_rows(app) == before
    response = await client.post("/api/v1/event-endpoint/org/1", json={"url": url}, headers=auth)
    assert response.status_code == 409 and response.json()["metadata"]["code"] == "limit_reached"
    path = f"/api/v1/event-endpoint/{created[0]['id']}/deliveries"
    for params in ({"cursor": "-1"}, {"cursor": "x"}, {"status": "lost"}, {"limit": "0"}, {"limit": "201"}):
        response = await client.get(path, params=params, headers=auth)
        assert response.status_code == 400, (params, response.text)
    for path in ("/api/v1/event-endpoint/99999", "/api/v1/event-endpoint/abc", "/api/v1/event-delivery/0"):
        assert (await client.get(path, headers=auth)).status_code == 404

    # Deliveries come in keyset pages, newest first.
    sent = []
    for _ in range(3):
        response = await client.post(f"/api/v1/event-endpoint/{created[0]['id']}/test", headers=auth)
        sent.append(response.json()["deliveries"][0]["id"])
    response = await client.get(path_of(created[0]), params={"limit": "2"}, headers=auth)
    page = response.json()
    assert [d["id"] for d in page["deliveries"]] == sent[:0:-1] and page["nextCursor"]
    response = await client.get(path_of(created[0]), params={"limit": "2", "cursor": page["nextCursor"]}, headers=auth)
    assert [d["id"] for d in response.json()["deliveries"]] == sent[:1] and response.json()["nextCursor"] is None
    response = await client.get(f"/api/v1/event-delivery/{sent[0]}", headers=auth)
    assert response.json()["deliveries"][0]["payload"]["type"] == "endpoint.test"


def path_of(endpoint: dict[str, Any]) -> str:
    return f"/api/v1/event-endpoint/{endpoint['id']}/deliveries"


async def test_test_events_waiting_for_delivery_are_capped(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    # A receiver that keeps failing: test events stay pending (retried), as they would against a dead host.
    httpserver.expect_request("/down").respond_with_data("", status=503)
    created = await create_endpoint(client, auth, "1", httpserver.url_for("/down"))
    path = f"/api/v1/event-endpoint/{created['id']}/test"
    for _ in range(service.MAX_PENDING_TESTS):
        assert (await client.post(path, headers=auth)).status_code == 202
    response = await client.post(path, headers=auth)
    assert response.status_code == 409, response.text
    assert response.json()["metadata"]["code"] == "tests_pending"
    assert await delivery_count(app) == service.MAX_PENDING_TESTS
    # Once they are no longer waiting (delivered, failed or purged), a test may be sent again.
    async with app.state.context.sessions() as session:
        await session.execute(update(EventDelivery).values(status="failed"))
        await session.commit()
    assert (await client.post(path, headers=auth)).status_code == 202
    assert await delivery_count(app) == service.MAX_PENDING_TESTS + 1
