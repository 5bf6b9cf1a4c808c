"""Console test fixtures: in-process browsers with their own cookie jars, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from console_kit import Browser, signed_in

PUBLIC_URL = "http://testserver"  # the root conftest's, which the settings' public_url is


def browser_client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40001))
    return httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL, follow_redirects=False)


@pytest.fixture
def open_browser(app: Any) -> Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]:
    """A fresh browser (cookie jar) per call, for tests that need two people at once."""

    @asynccontextmanager
    async def opened() -> AsyncIterator[httpx.AsyncClient]:
        async with browser_client(app) as http:
            yield http

    return opened


@pytest.fixture
async def owner_browser(app: Any, owner: Any) -> AsyncIterator[Browser]:
    """The first Owner, signed in to the console."""
    async with browser_client(app) as http:
        yield await signed_in(app, http, int(owner.user_id))
