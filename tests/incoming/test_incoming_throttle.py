"""Failed /incoming/token requests are limited per client id (iss) and per address, in the database, without
letting a stranger lock a client out (the counters are those of the /api/v1/token login)."""

from __future__ import annotations

import httpx
import pytest
from incoming_support import GRANT, PUBLIC_URL, TOKEN_PATH, Incoming, Trigger

from ihub.app import create_app

pytestmark = pytest.mark.anyio

LIMITS = {
    "incoming_token_failures_per_client_and_address": 3,
    "incoming_token_failures_per_address": 5,
    "incoming_token_failures_per_client": 100,
}
CEILING = {**LIMITS, "incoming_token_failures_per_client": 4}
UNKNOWN_ISS = "4f019d43-4900-3a98-aa06-46143f40c061"


def client_at(app, address: str) -> httpx.AsyncClient:  # noqa: ANN001
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 4000)), base_url=PUBLIC_URL)


async def token(http: httpx.AsyncClient, assertion: str) -> httpx.Response:
    return await http.post(TOKEN_PATH, json={"grant_type": GRANT, "assertion": assertion})


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "slow_down"
    assert "retry in" in response.json()["error_description"]
    assert 1 <= int(response.headers["retry-after"]) <= 300


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_bad_assertions_for_a_client_are_limited_per_address(app, incoming: Incoming, trigger: Trigger):
    async with client_at(app, "10.0.0.1") as attacker, client_at(app, "10.0.0.2") as rightful:
        for _ in range(3):
            forged = await token(attacker, trigger.assertion(aud="http://elsewhere/token"))
            assert forged.status_code == 400
        assert_limited(await token(attacker, trigger.assertion(aud="http://elsewhere/token")))
        # A valid assertion from the limited address waits too (the check comes before any verification) ...
        assert_limited(await token(attacker, trigger.assertion()))
        # ... but the client itself, calling from its own address, is not locked out.
        granted = await token(rightful, trigger.assertion())
        assert granted.status_code == 200, granted.text


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_one_address_guessing_many_clients_is_limited(app, incoming: Incoming, trigger: Trigger):
    async with client_at(app, "10.0.0.3") as noisy, client_at(app, "10.0.0.4") as quiet:
        for index in range(5):
            refused = await token(noisy, trigger.assertion(iss=f"{UNKNOWN_ISS[:-2]}{index:02d}"))
            assert refused.status_code == 401
        # Junk that names no client counts for the address as well.
        assert_limited(await noisy.post(TOKEN_PATH, data={"grant_type": GRANT, "assertion": "x.y.z"}))
        assert_limited(await token(noisy, trigger.assertion()))
        assert (await token(quiet, trigger.assertion())).status_code == 200


@pytest.mark.parametrize("settings_overrides", [CEILING])
async def test_the_per_client_ceiling_spares_addresses_that_never_failed(app, incoming: Incoming, trigger: Trigger):
    """Four failures for one iss from two addresses reach the ceiling: both wait, a clean address does not."""
    async with client_at(app, "10.1.0.1") as first, client_at(app, "10.1.0.2") as second:
        for _ in range(2):
            assert (await token(first, trigger.assertion(sub="999999"))).status_code == 400
            assert (await token(second, trigger.assertion(sub="999999"))).status_code == 400
        assert_limited(await token(first, trigger.assertion()))
        assert_limited(await token(second, trigger.assertion()))
    async with client_at(app, "10.1.0.3") as clean:
        assert (await token(clean, trigger.assertion())).status_code == 200


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_successes_do_not_count(app, incoming: Incoming, trigger: Trigger):
    async with client_at(app, "10.0.0.5") as http:
        for _ in range(6):
            assert (await token(http, trigger.assertion())).status_code == 200


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_api_nodes_share_the_counts(app, settings, incoming: Incoming, trigger: Trigger):
    """A second app on the same database (another API node) sees the failures the first one counted."""
    other = create_app(settings, run_worker=False)
    async with (
        other.router.lifespan_context(other),
        client_at(app, "10.0.0.6") as first,
        client_at(other, "10.0.0.6") as second,
    ):
        for node in (first, second, first):
            assert (await token(node, trigger.assertion(sub="999999"))).status_code == 400
        assert_limited(await token(second, trigger.assertion()))
