"""Admin → Events: register an endpoint (secret shown once), test it, re-send; Members read only."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from console_flows import console_user
from console_kit import Browser
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select

from ihub.events.models import EventDelivery, EventEndpoint

pytestmark = pytest.mark.anyio


async def count(app: Any, model: Any) -> int:
    async with app.state.context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_an_admin_registers_tests_and_resends_and_a_member_only_reads(
    app: Any,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    owner_browser: Browser,
    open_browser: Any,
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=200)
    page = "/console/org/1/events"
    response = await owner_browser.submit(
        page,
        page,
        {"url": httpserver.url_for("/hook"), "description": "on-call", "eventTypes": ["run.failed", "run.parked"]},
    )
    assert response.status_code == 200, response.text[:2000]
    secret = re.search(r"whsec_[A-Za-z0-9+/=]+", response.text)
    assert secret and "shown only this once" in response.text
    async with app.state.context.sessions() as session:
        endpoint = await session.scalar(select(EventEndpoint))
    assert endpoint is not None and endpoint.event_types == ["run.failed", "run.parked"]
    selected = f"{page}?endpoint={endpoint.id}"
    assert secret.group(0) not in (await owner_browser.page(selected)).text

    response = await owner_browser.submit(selected, f"/console/event-endpoint/{endpoint.id}/test", {})
    assert response.status_code == 303
    for _ in range(400):  # up to 20 s on a loaded machine; usually the first looks
        async with app.state.context.sessions() as session:
            delivery = await session.scalar(select(EventDelivery))
        if delivery is not None and delivery.status == "delivered":
            break
        await asyncio.sleep(0.05)
    [(request, _)] = httpserver.log
    assert delivery is not None and request.headers["webhook-id"] == delivery.message_id
    delivery_id = delivery.id
    response = await owner_browser.submit(selected, f"/console/event-delivery/{delivery_id}/resend", {})
    assert response.status_code == 303 and "will be sent again" in (await owner_browser.page(selected)).text

    async with open_browser() as http:
        member = await console_user(app, client, auth, http, "1", "Member")
        text = (await member.page(selected)).text
        assert endpoint.url in text and "Register an endpoint" not in text and "Rotate secret" not in text
        response = await member.submit(selected, f"/console/event-endpoint/{endpoint.id}/delete", {})
        assert response.status_code == 403
    assert await count(app, EventEndpoint) == 1
