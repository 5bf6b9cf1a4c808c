"""JWKS URLs under the egress policy, and fetched without holding the database."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
from typing import Any

import pytest
from incoming_support import Incoming, sign
from joserfc.jwk import RSAKey
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ihub.config import Settings
from ihub.egress.policy import IPAddress
from ihub.incoming.access import incoming_state

pytestmark = pytest.mark.anyio


@pytest.fixture
def egress_allow() -> list[str]:
    return ["127.0.0.0/8", "::1"]


@pytest.fixture
def settings(settings: Settings, egress_allow: list[str]) -> Settings:
    return settings.model_copy(update={"egress_allow": egress_allow})


def published(private_pem: str, kid: str) -> dict[str, Any]:
    return {**RSAKey.import_key(private_pem).as_dict(private=False), "kid": kid, "alg": "RS256", "use": "sig"}


async def triggers_of(incoming: Incoming, flow_id: str) -> list[dict[str, Any]]:
    response = await incoming.client.get(f"/api/v1/flow/{flow_id}/trigger/jwt", headers=incoming.auth)
    assert response.status_code == 200, response.text
    return response.json()["triggers"]


@pytest.mark.parametrize("egress_allow", [[]], ids=["default-policy"])
async def test_refused_jwks_urls_are_refused_when_entered(incoming: Incoming) -> None:
    flow = incoming.flows["create-issue"]
    refused = [
        "http://127.0.0.1:9/jwks",
        "http://127.1/jwks",
        "http://[::1]:9/jwks",
        "http://localhost:9/jwks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:10.0.0.1]/keys",
        "https://2852039166/keys",
    ]
    for url in refused:
        response = await incoming.create(flow, {"jwksUrl": url})
        assert response.status_code == 400, (url, response.text)
        assert "egress policy refuses" in response.json()["metadata"]["message"], url
    for malformed in ("https://[::1/keys", "https://keys.example.test:99999/keys"):
        response = await incoming.create(flow, {"jwksUrl": malformed})
        assert response.status_code == 400 and response.json()["metadata"]["code"] == "invalid_key", malformed
    assert await triggers_of(incoming, flow) == []  # nothing was created

    good = await incoming.trigger(body={"jwksUrl": "https://jwks.example.test/keys"})
    response = await incoming.client.put(
        f"/api/v1/flow/{flow}/trigger/jwt/{good.iss}", json={"jwksUrl": "https://10.1.2.3/keys"}, headers=incoming.auth
    )
    assert response.status_code == 400 and "private address" in response.json()["metadata"]["message"]
    assert [t["jwksUrl"] for t in await triggers_of(incoming, flow)] == ["https://jwks.example.test/keys"]


@pytest.mark.parametrize("egress_allow", [[]], ids=["default-policy"])
async def test_a_jwks_name_resolving_inside_is_refused_at_fetch(app: Any, incoming: Incoming, client_key: Any) -> None:
    """The name passes when entered (no DNS then); the fetch resolves it, sees the metadata address and
    refuses before connecting. The stub resolver keeps this test off the network."""
    asked: list[str] = []

    async def metadata(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address("169.254.169.254")]

    incoming_state(app.state.context).jwks.resolver = metadata
    trigger = await incoming.trigger(body={"jwksUrl": "https://keys.example.test/jwks.json"})
    response = await incoming.token(sign(client_key[0], trigger.claims(), kid="k1"))
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    description = response.json()["error_description"]
    assert "egress policy refuses it" in description and "link-local" in description
    assert "169.254.169.254" not in description
    assert asked == ["keys.example.test"]


async def test_jwks_above_the_cap_is_not_used(incoming: Incoming, httpserver: HTTPServer, client_key: Any) -> None:
    httpserver.expect_request("/jwks.json").respond_with_data(
        '{"keys": [], "padding": "' + "p" * 70_000 + '"}', content_type="application/json"
    )
    trigger = await incoming.trigger(body={"jwksUrl": httpserver.url_for("/jwks.json")})
    response = await incoming.token(sign(client_key[0], trigger.claims()))
    assert response.status_code == 400
    assert "larger than 65536 bytes" in response.json()["error_description"]


async def test_a_slow_jwks_host_holds_no_database_connection(
    app: Any, incoming: Incoming, httpserver: HTTPServer, client_key: tuple[str, str]
) -> None:
    """While one client's JWKS host hangs, other clients get tokens (a jti insert) and the API writes.
    On SQLite (one write connection per process) this fails if the fetch runs inside a transaction."""
    arrived, release = threading.Event(), threading.Event()
    private_pem = client_key[0]

    def hanging(_request: Request) -> Response:
        arrived.set()
        release.wait(timeout=20)
        return Response(json.dumps({"keys": [published(private_pem, "slow-kid")]}), content_type="application/json")

    httpserver.expect_request("/jwks.json").respond_with_handler(hanging)
    slow_client = await incoming.trigger(body={"jwksUrl": httpserver.url_for("/jwks.json")})
    fast_client = await incoming.trigger(body={"publicKey": client_key[1]})
    incoming_state(app.state.context).jwks.timeout = 30  # only the test decides when the host answers

    slow = asyncio.create_task(incoming.token(sign(private_pem, slow_client.claims(), kid="slow-kid")))
    try:
        while not arrived.is_set():
            await asyncio.sleep(0.01)
        fast = await incoming.token(sign(private_pem, fast_client.claims(jti="once")))
        assert fast.status_code == 200, fast.text
        replay = await incoming.token(sign(private_pem, fast_client.claims(jti="once")))
        assert replay.status_code == 400 and "jti" in replay.json()["error_description"]  # the insert happened
        org = await incoming.org()
        assert org
        assert not slow.done()  # all of the above finished while the JWKS host was still hanging
    finally:
        release.set()
    assert (await slow).status_code == 200
