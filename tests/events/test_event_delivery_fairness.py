"""A tenant whose receiver answers slowly, with a backlog of due deliveries, holds a few of a process's delivery
slots (PER_ENDPOINT per endpoint, PER_TENANT per tenant) and does not delay another tenant's events."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from event_receiver import wait_for
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from werkzeug import Request, Response

from ihub.db.base import utcnow
from ihub.events import delivery
from ihub.events.models import EventDelivery

pytestmark = pytest.mark.anyio

BACKLOG = 30


class SlowReceiver:
    """/slow holds every request until released and counts how many it holds at once; /fast answers at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.holding = 0
        self.most_held = 0
        self.fast = 0

    def slow(self, request: Request) -> Response:
        with self.lock:
            self.holding += 1
            self.most_held = max(self.most_held, self.holding)
        self.release.wait(30)
        with self.lock:
            self.holding -= 1
        return Response("", status=200)

    def quick(self, request: Request) -> Response:
        with self.lock:
            self.fast += 1
        return Response("", status=200)


async def endpoint(client: httpx.AsyncClient, auth: dict[str, str], org_id: str, url: str) -> int:
    response = await client.post(f"/api/v1/event-endpoint/org/{org_id}", json={"url": url}, headers=auth)
    assert response.status_code == 200, response.text
    return int(response.json()["endpoints"][0]["id"])


async def queue(app: Any, endpoint_id: int, count: int, *, age_seconds: float) -> None:
    now = utcnow()
    async with app.state.context.sessions() as session:
        for _ in range(count):
            session.add(
                EventDelivery(
                    message_id=f"msg_{uuid.uuid4().hex}",
                    endpoint_id=endpoint_id,
                    event_type="endpoint.test",
                    body="{}",
                    status="pending",
                    attempts=0,
                    next_attempt_at=now - timedelta(seconds=age_seconds),
                    give_up_at=now + timedelta(days=1),
                )
            )
        await session.commit()


async def delivered(app: Any, endpoint_id: int) -> int:
    async with app.state.context.sessions() as session:
        query = select(func.count()).where(
            EventDelivery.endpoint_id == endpoint_id, EventDelivery.status == "delivered"
        )
        return int(await session.scalar(query) or 0)


async def test_a_slow_tenants_backlog_does_not_hold_back_another_tenants_events(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], api: Any
) -> None:
    receiver = SlowReceiver()
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.expect_request("/slow").respond_with_handler(receiver.slow)
    server.expect_request("/fast").respond_with_handler(receiver.quick)
    server.start()
    try:
        slow_tenant, other_tenant = await api.add_org("slow", "1"), await api.add_org("other", "1")
        slow_sub = await api.add_org("slow-sub", slow_tenant)
        # Three slow endpoints in one tenant (two in a sub-organization): the tenant's share binds, not only
        # each endpoint's.
        slow_endpoints = [
            await endpoint(client, auth, org, server.url_for("/slow")) for org in (slow_tenant, slow_sub, slow_sub)
        ]
        fast = await endpoint(client, auth, other_tenant, server.url_for("/fast"))
        for slow in slow_endpoints:
            await queue(app, slow, BACKLOG, age_seconds=60)  # older: first in line
        await queue(app, fast, 1, age_seconds=0)
        app.state.event_deliverer.signal.set()

        # The other tenant's event arrives while the slow receiver still holds every request it got.
        await wait_for(lambda: receiver.fast == 1)
        await wait_for_delivered(app, fast, 1)  # recorded once the answer is back
        # The slow tenant holds its share, no more: the tenant's share binds before its endpoints' (three
        # endpoints could hold 3 * PER_ENDPOINT).
        await wait_for(lambda: receiver.holding == delivery.PER_TENANT)
        assert receiver.most_held == delivery.PER_TENANT < 3 * delivery.PER_ENDPOINT
        assert all([await delivered(app, slow) == 0 for slow in slow_endpoints])
    finally:
        receiver.release.set()
        # Released, the backlog drains: every delivery once.
        for slow in slow_endpoints:
            await wait_for_delivered(app, slow, BACKLOG)
        server.stop()
    assert receiver.most_held <= delivery.PER_TENANT


async def wait_for_delivered(app: Any, endpoint_id: int, count: int) -> None:
    for _ in range(600):
        if await delivered(app, endpoint_id) == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"endpoint {endpoint_id}: {await delivered(app, endpoint_id)} of {count} delivered")
