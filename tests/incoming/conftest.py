"""Fixtures for incoming-trigger tests (helpers live in incoming_support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from incoming_support import PUBLIC_URL, Incoming, Trigger

from ihub.app import create_app
from ihub.config import Settings

# The suite sends hundreds of refused assertions from one address; the failure limits have tests of their own
# (test_incoming_throttle.py), which set them with `@pytest.mark.parametrize("settings_overrides", [...])`.
UNLIMITED = {
    "incoming_token_failures_per_client_and_address": 10**6,
    "incoming_token_failures_per_address": 10**6,
    "incoming_token_failures_per_client": 10**6,
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings(settings: Settings, settings_overrides: dict[str, Any]) -> Settings:
    return settings.model_copy(update={**UNLIMITED, **settings_overrides})


@pytest.fixture
async def incoming(client: httpx.AsyncClient, auth: dict[str, str]) -> Incoming:
    hub = Incoming(client, auth)
    await hub.make_flows()
    return hub


@pytest.fixture(scope="session")
def client_key() -> tuple[str, str]:
    """One RSA pair (private, public PEM) for the session: uploading it spares a key generation per test.
    Key generation itself is covered where it matters (trigger page, rotation, live samples)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
async def trigger(incoming: Incoming, client_key: tuple[str, str]) -> Trigger:
    """A client of the `create-issue` flow holding the session's key pair."""
    created = await incoming.trigger(body={"publicKey": client_key[1]})
    created.private_key = client_key[0]
    return created


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
