"""Fixtures for incoming-trigger tests (helpers live in incoming_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from incoming_support import PUBLIC_URL, Incoming, Trigger

from ihub.app import create_app
from ihub.config import Settings


@pytest.fixture
async def incoming(client: httpx.AsyncClient, auth: dict[str, str]) -> Incoming:
    hub = Incoming(client, auth)
    await hub.make_flows()
    return hub


@pytest.fixture
async def trigger(incoming: Incoming) -> Trigger:
    return await incoming.trigger()


@pytest.fixture
async def idle_app(settings: Settings):  # noqa: ANN201
    """The app without an executor (as `ihub serve --no-worker`): runs stay queued unless a test moves them."""
    application = create_app(settings, run_worker=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def idle_client(idle_app) -> AsyncIterator[httpx.AsyncClient]:  # noqa: ANN001
    transport = httpx.ASGITransport(app=idle_app, client=("127.0.0.1", 40001))
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as http:
        yield http
