"""Event endpoints against hostile input and hostile receivers: URLs the deliverer could not send or that reach
a refused address in another spelling, attempts that cannot even be made, receivers that answer slowly or at
length, the per-organization limit under concurrency, and sub-organization tenancy."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
from event_receiver import wait_for_async
from flowkit import Kit
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select, text, update

from ihub.common.errors import ApiError
from ihub.db.base import utcnow
from ihub.egress import policy_from_settings
from ihub.events import delivery as delivery_module
from ihub.events import service
from ihub.events.models import EventDelivery, EventEndpoint
from ihub.events.schemas import EndpointCreate
from ihub.tenancy.models import Organization
from ihub.tenancy.permissions import Principal, Role

pytestmark = pytest.mark.anyio


async def endpoint_count(app: Any) -> int:
    async with app.state.context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(EventEndpoint)) or 0)


async def test_urls_refused_in_any_spelling_and_unsendable_urls_are_400s(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # The default policy (nothing allowed): registration decides without DNS and without connecting anywhere.
    context = app.state.context
    context.settings = context.settings.model_copy(update={"egress_allow": []})
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://0x7f.1/hook",
        "https://2130706433/hook",
        "https://10.1.2.3/hook",
        "https://[fd00::1]/hook",
        # Ideographic full stops: a name to urlsplit, 127.0.0.1 to the HTTP client that would send.
        "https://127\u30020\u30020\u30021/hook",
        "https://169\uff0e254\uff0e169\uff0e254/",
    ]:
        response = await client.post("/api/v1/event-endpoint/org/1", json={"url": url}, headers=auth)
        assert response.status_code == 400, (url, response.text)
        metadata = response.json()["metadata"]
        assert metadata["code"] == "egress_refused", url
        assert metadata["message"].count("egress policy refuses") == 1, metadata["message"]
    # URLs the HTTP client cannot send at all: refused now, not retried forever later.
    for url in ["https://xn--/hook", "https://\u00ad.example.com/", "https://\ufb00.example.com/", "https://[v1.x]/"]:
        response = await client.post("/api/v1/event-endpoint/org/1", json={"url": url}, headers=auth)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["metadata"]["code"] == "invalid_request", url
    assert await endpoint_count(app) == 0
    # An international name is fine (sent as its A-label).
    response = await client.post(
        "/api/v1/event-endpoint/org/1", json={"url": "https://b\u00fccher.example/hook"}, headers=auth
    )
    assert response.status_code == 200, response.text
    # And a change of URL goes through the same checks.
    endpoint_id = response.json()["endpoints"][0]["id"]
    response = await client.put(
        f"/api/v1/event-endpoint/{endpoint_id}", json={"url": "https://127\u30020\u30020\u30021/"}, headers=auth
    )
    assert response.status_code == 400 and response.json()["metadata"]["code"] == "egress_refused"
    response = await client.get(f"/api/v1/event-endpoint/{endpoint_id}", headers=auth)
    assert response.json()["endpoints"][0]["url"] == "https://b\u00fccher.example/hook"


# -- hostile receivers -----------------------------------------------------------------------------------------


async def create(client: httpx.AsyncClient, auth: dict[str, str], url: str, org_id: str = "1") -> dict[str, Any]:
    response = await client.post(f"/api/v1/event-endpoint/org/{org_id}", json={"url": url}, headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json()["endpoints"][0])


async def send_test(client: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str) -> str:
    response = await client.post(f"/api/v1/event-endpoint/{endpoint_id}/test", headers=auth)
    assert response.status_code == 202, response.text
    return str(response.json()["deliveries"][0]["id"])


async def delivery(client: httpx.AsyncClient, auth: dict[str, str], delivery_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/event-delivery/{delivery_id}", headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json()["deliveries"][0])


async def first_attempt(client: httpx.AsyncClient, auth: dict[str, str], delivery_id: str) -> dict[str, Any]:
    async def attempted() -> dict[str, Any] | None:
        row = await delivery(client, auth, delivery_id)
        return row if row["attempts"] >= 1 else None

    return dict(await wait_for_async(attempted))


async def test_an_attempt_that_cannot_be_made_is_recorded_as_failed_not_retried_forever(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    """Rows the API would refuse today (a URL stored before it was checked as strictly; a secret sealed under
    a key the hub no longer has): each attempt fails and counts, so the retry window ends them."""
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    bad_url = await create(client, auth, httpserver.url_for("/hook"))
    bad_secret = await create(client, auth, httpserver.url_for("/hook"))
    async with app.state.context.sessions() as session:
        await session.execute(
            update(EventEndpoint).where(EventEndpoint.id == int(bad_url["id"])).values(url="https://xn--/hook")
        )
        await session.execute(
            update(EventEndpoint).where(EventEndpoint.id == int(bad_secret["id"])).values(secret_sealed="v1:broken")
        )
        # Due now, and past their retry window: the first failed attempt is the last.
        rows = [
            EventDelivery(
                message_id=f"msg_poison_{endpoint['id']}",
                endpoint_id=int(endpoint["id"]),
                event_type="endpoint.test",
                body="{}",
                status="pending",
                next_attempt_at=utcnow(),
                give_up_at=utcnow(),
            )
            for endpoint in (bad_url, bad_secret)
        ]
        session.add_all(rows)
        await session.flush()
        ids = [str(row.id) for row in rows]
        await session.commit()

    for delivery_id in ids:
        row = await first_attempt(client, auth, delivery_id)
        assert row["status"] == "failed" and row["attempts"] == 1, row
        assert row["lastError"].startswith("the hub could not make the attempt"), row
    assert httpserver.log == []


GARBAGE = b"receiver-said-" + b"g" * 20


class RawReceiver:
    """A TCP receiver on 127.0.0.1 that reads a request and then answers as told, and records when the hub
    closes the connection: `headers_only` sends 200 with a 100 MB Content-Length and a first chunk, then
    nothing more; `silent` never answers; `garbage` answers a status line that is not HTTP."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawReceiver:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if self.mode == "headers_only":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536)
                await writer.drain()
            elif self.mode == "garbage":
                writer.write(b"HTTQ/9 " + GARBAGE + b"\r\n\r\n")
                await writer.drain()
                return
            # Wait until the hub hangs up: the attempt must not hold the connection (or a slot) past its verdict.
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            writer.close()


async def test_a_2xx_is_delivered_whatever_the_body_and_the_body_is_never_read_or_stored(
    client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    marker = "receiver-page-" + "m" * 40
    httpserver.expect_request("/big").respond_with_data(marker + "x" * 1_000_000, status=200)
    httpserver.expect_request("/broken").respond_with_data(marker, status=500)
    big = await create(client, auth, httpserver.url_for("/big"))
    broken = await create(client, auth, httpserver.url_for("/broken"))
    row = await first_attempt(client, auth, await send_test(client, auth, big["id"]))
    assert (row["status"], row["attempts"], row["lastStatusCode"], row["lastError"]) == ("delivered", 1, 200, None)
    assert [request.path for request, _ in httpserver.log] == ["/big"]  # once: no re-delivery of a received event
    row = await first_attempt(client, auth, await send_test(client, auth, broken["id"]))
    assert row["status"] == "pending" and row["lastStatusCode"] == 500
    text = json.dumps(row)
    assert marker not in text and broken["secret"] not in text and big["secret"] not in text

    # A receiver that sends its status and then trickles (or never finishes) an endless body.
    async with RawReceiver("headers_only") as receiver:
        endless = await create(client, auth, receiver.url)
        row = await first_attempt(client, auth, await send_test(client, auth, endless["id"]))
        assert (row["status"], row["lastStatusCode"]) == ("delivered", 200)
        await asyncio.wait_for(receiver.closed.wait(), 20)  # the hub hung up without reading the 100 MB
        assert receiver.requests == 1
    # What a receiver sends is not kept, even when it is not HTTP (the client's error quotes it).
    async with RawReceiver("garbage") as receiver:
        garbled = await create(client, auth, receiver.url)
        row = await first_attempt(client, auth, await send_test(client, auth, garbled["id"]))
        assert row["lastError"] == "the answer is not valid HTTP (RemoteProtocolError)", row


async def test_a_receiver_that_never_answers_costs_one_deadline_then_the_slot_is_free(
    client: httpx.AsyncClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "ATTEMPT_TIMEOUT_SECONDS", 0.3)
    async with RawReceiver("silent") as receiver:
        silent = await create(client, auth, receiver.url)
        row = await first_attempt(client, auth, await send_test(client, auth, silent["id"]))
        assert row["status"] == "pending" and row["lastStatusCode"] is None
        assert row["lastError"] == "no answer within 0.3 s"
        await asyncio.wait_for(receiver.closed.wait(), 20)  # the connection was dropped at the deadline


async def test_a_refused_connection_is_recorded_without_the_address_connected_to(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # A port nothing listens on (bound, then closed). The client's error text names the address it resolved and
    # connected to ("Connect call failed ('127.0.0.1', 4242)"): the egress policy never shows a tenant resolved
    # addresses, so neither does an attempt's record.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = await create(client, auth, f"http://127.0.0.1:{port}/hook")
    row = await first_attempt(client, auth, await send_test(client, auth, closed["id"]))
    assert row["status"] == "pending" and row["lastStatusCode"] is None
    assert row["lastError"] == "could not connect to the endpoint (ConnectError)", row


# -- the per-organization limit --------------------------------------------------------------------------------


async def test_concurrent_creations_cannot_pass_the_endpoint_limit_together(
    app: Any, db_url: str, auth: dict[str, str]
) -> None:
    """Two creations at 19 of 20: the second waits for the first's commit, then counts 20 and is refused."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writing transactions: only PostgreSQL runs two creations at once")
    context = app.state.context
    async with context.sessions() as session:
        root = await session.get(Organization, 1)
        assert root is not None
        owner = Principal(user_id=1, org_id=1, org_path=root.path, role=Role.OWNER)
        for i in range(service.MAX_ENDPOINTS_PER_ORG - 1):
            session.add(EventEndpoint(org_id=1, url=f"https://r.example/{i}", event_types=[], secret_sealed="x"))
        await session.commit()
    policy = policy_from_settings(context.settings)
    data = EndpointCreate(url="https://receiver.example/hook")

    async def create_in_own_transaction() -> None:
        async with context.sessions() as session, session.begin():
            await service.create_endpoint(session, context.box, policy, owner, 1, data)

    async with context.sessions() as first:
        await first.begin()
        await service.create_endpoint(first, context.box, policy, owner, 1, data)  # the 20th, not committed yet
        second = asyncio.create_task(create_in_own_transaction())

        async def second_waits_for_a_lock() -> bool:
            async with context.sessions() as probe:
                waiting = await probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )
            return second.done() or bool(waiting)

        await wait_for_async(second_waits_for_a_lock)
        assert not second.done(), "the second creation did not wait for the first"
        await first.commit()
    with pytest.raises(ApiError) as refused:
        await second
    assert refused.value.status == 409
    assert await endpoint_count(app) == service.MAX_ENDPOINTS_PER_ORG


async def test_sub_organizations_share_their_tenants_endpoint_limit(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], api: Any
) -> None:
    acme, globex = await api.add_org("acme", "1"), await api.add_org("globex", "1")
    subs = [await api.add_org(f"acme-{i}", acme) for i in range(service.MAX_ENDPOINTS_PER_TENANT // 19)]
    async with app.state.context.sessions() as session:
        for i in range(service.MAX_ENDPOINTS_PER_TENANT - 1):
            org = int(subs[i // 19]) if i // 19 < len(subs) else int(acme)
            session.add(EventEndpoint(org_id=org, url=f"http://127.0.0.1:9/r{i}", event_types=[], secret_sealed="x"))
        await session.commit()
    fresh = await api.add_org("acme-fresh", acme)
    body = {"url": "http://127.0.0.1:9/hook"}  # loopback (the tests' allow-list); no event is sent to it
    created = await client.post(f"/api/v1/event-endpoint/org/{fresh}", json=body, headers=auth)
    assert created.status_code == 200, created.text
    before = await endpoint_count(app)
    for org in (fresh, await api.add_org("acme-another", acme), acme):
        refused = await client.post(f"/api/v1/event-endpoint/org/{org}", json=body, headers=auth)
        assert refused.status_code == 409 and refused.json()["metadata"]["code"] == "limit_reached", refused.text
        assert "its sub-organizations" in refused.json()["metadata"]["message"]
    assert await endpoint_count(app) == before
    # Another tenant is not held back by acme's.
    other = await client.post(f"/api/v1/event-endpoint/org/{globex}", json=body, headers=auth)
    assert other.status_code == 200, other.text
    assert await endpoint_count(app) == before + 1


# -- tenancy: sub-organizations and Members ---------------------------------------------------------------------


async def endpoint_state(app: Any) -> list[tuple[Any, ...]]:
    """Every endpoint's row and every delivery's status and due time: what a refused request must not change."""
    async with app.state.context.sessions() as session:
        endpoints = await session.execute(
            select(
                EventEndpoint.id,
                EventEndpoint.url,
                EventEndpoint.event_types,
                EventEndpoint.enabled,
                EventEndpoint.secret_sealed,
                EventEndpoint.previous_secret_sealed,
            ).order_by(EventEndpoint.id)
        )
        deliveries = await session.execute(
            select(EventDelivery.id, EventDelivery.status, EventDelivery.next_attempt_at).order_by(EventDelivery.id)
        )
        return [tuple(row) for row in endpoints] + [tuple(row) for row in deliveries]


async def test_a_sub_organization_cannot_reach_its_parents_endpoints_and_members_change_nothing(
    kit: Kit, app: Any, client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # Nothing is delivered here: deliveries stay pending, unleased and resendable, and change only if a request
    # changes them.
    await app.state.event_deliverer.stop()
    app.state.event_deliverer = None
    parent = await kit.org()
    child = await kit.org(parent)
    child_owner = await kit.login(child, "Owner")
    parent_member = await kit.login(parent, "Member")
    parent_admin = await kit.login(parent, "Admin")
    on_parent = await create(client, auth, "https://parent.example/hook", parent)
    on_child = await create(client, auth, "https://child.example/hook", child)
    parent_delivery = await send_test(client, auth, on_parent["id"])
    child_delivery = await send_test(client, auth, on_child["id"])
    before = await endpoint_state(app)

    def calls(endpoint_id: str, delivery_id: str, org_id: str) -> list[tuple[str, str]]:
        return [
            ("GET", f"/api/v1/event-endpoint/{endpoint_id}"),
            ("PUT", f"/api/v1/event-endpoint/{endpoint_id}"),
            ("POST", f"/api/v1/event-endpoint/{endpoint_id}/rotate-secret"),
            ("POST", f"/api/v1/event-endpoint/{endpoint_id}/test"),
            ("GET", f"/api/v1/event-endpoint/{endpoint_id}/deliveries"),
            ("GET", f"/api/v1/event-delivery/{delivery_id}"),
            ("POST", f"/api/v1/event-delivery/{delivery_id}/resend"),
            ("GET", f"/api/v1/event-endpoint/org/{org_id}"),
            ("POST", f"/api/v1/event-endpoint/org/{org_id}"),
            ("DELETE", f"/api/v1/event-endpoint/{endpoint_id}"),
        ]

    def body_for(path: str) -> dict[str, Any]:
        """A valid body for each call (a creation has no `enabled`): the refusal, not validation, must answer."""
        body: dict[str, Any] = {"url": "https://attacker.example/hook", "eventTypes": ["run.failed"]}
        return body if "/org/" in path else {**body, "enabled": False}

    # The child's Owner sees nothing above its organization, not even that the parent's endpoint exists.
    for method, path in calls(on_parent["id"], parent_delivery, parent):
        response = await client.request(method, path, json=body_for(path), headers=child_owner)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["metadata"]["code"] == "not_found"
    # A Member of the parent reads (its own and the child's) but changes nothing.
    for endpoint_id, delivery_id, org_id in [
        (on_parent["id"], parent_delivery, parent),
        (on_child["id"], child_delivery, child),
    ]:
        for method, path in calls(endpoint_id, delivery_id, org_id):
            response = await client.request(method, path, json=body_for(path), headers=parent_member)
            expected = 200 if method == "GET" else 403
            assert response.status_code == expected, (method, path, response.text)
            assert "whsec_" not in response.text
    assert await endpoint_state(app) == before

    # The parent's Admin manages the child's endpoint: the change is there.
    response = await client.put(
        f"/api/v1/event-endpoint/{on_child['id']}", json={"enabled": False}, headers=parent_admin
    )
    assert response.status_code == 200, response.text
    response = await client.get(f"/api/v1/event-endpoint/{on_child['id']}", headers=child_owner)
    assert response.json()["endpoints"][0]["enabled"] is False


async def test_a_redirect_is_an_answer_never_followed(
    client: httpx.AsyncClient, auth: dict[str, str], httpserver: HTTPServer
) -> None:
    """A receiver's 3xx is a failed attempt: neither the metadata address it points at nor another path of
    the same receiver is requested."""
    metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    httpserver.expect_request("/to-metadata").respond_with_data("", status=302, headers={"Location": metadata})
    target = httpserver.url_for("/target")
    httpserver.expect_request("/to-target").respond_with_data("", status=307, headers={"Location": target})
    httpserver.expect_request("/target").respond_with_data("", status=200)
    for path, status in [("/to-metadata", 302), ("/to-target", 307)]:
        endpoint = await create(client, auth, httpserver.url_for(path))
        row = await first_attempt(client, auth, await send_test(client, auth, endpoint["id"]))
        # The answer itself is what is recorded, not a refusal or a connection error from following it.
        assert (row["status"], row["lastStatusCode"]) == ("pending", status), row
        assert row["lastError"] == f"the endpoint answered {status}"
    assert "/target" not in {request.path for request, _ in httpserver.log}
