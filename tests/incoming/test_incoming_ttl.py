"""IHUB_INCOMING_TOKEN_TTL_SECONDS by its effect: an access token works for its lifetime, then is refused."""

from __future__ import annotations

from typing import Any

import pytest
from incoming_support import AUD, SEED_TICKET, Incoming, Trigger

from ihub.config import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"incoming_token_ttl_seconds": 120})


async def test_access_token_lifetime_is_reported_and_enforced(incoming: Incoming, trigger: Trigger, clock: Any) -> None:
    response = await incoming.token(trigger.assertion(aud=AUD))
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 120
    token = response.json()["access_token"]
    clock.advance_to(110)
    assert (await incoming.webhook(token, SEED_TICKET)).status_code == 202
    clock.advance_to(130)
    response = await incoming.webhook(token, SEED_TICKET)
    assert response.status_code == 401
    assert "expired" in response.text
