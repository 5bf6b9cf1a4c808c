"""Clients that publish their keys as a JWK Set: fetch, cache, rotation, outages, revocation."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from incoming_support import Incoming, sign
from joserfc.jwk import RSAKey
from pytest_httpserver import HTTPServer
from werkzeug import Response

from ihub.incoming.access import incoming_state

pytestmark = pytest.mark.anyio


class PublishedKey:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        key = RSAKey.generate_key(2048)
        self.private_pem = key.as_pem(private=True).decode()
        self.jwk = {**key.as_dict(private=False), "kid": kid, "alg": "RS256", "use": "sig"}


def b64int(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8)).rstrip(b"=").decode()


def publish(server: HTTPServer, *keys: PublishedKey, status: int = 200) -> None:
    server.clear_all_handlers()
    if status != 200:
        server.expect_request("/jwks.json").respond_with_data("down", status=status)
    else:
        server.expect_request("/jwks.json").respond_with_json({"keys": [k.jwk for k in keys]})


def fetches(server: HTTPServer) -> int:
    return sum(1 for request, _ in server.log if request.path == "/jwks.json")


def a_minute_passes(app: Any, url: str) -> None:
    """The refetch limit is once a minute; move the last attempt back instead of sleeping."""
    incoming_state(app.state.context).jwks._entry(url).last_attempt -= 61


async def test_rotation_outage_and_revocation(app: Any, incoming: Incoming, httpserver: HTTPServer) -> None:
    first, second = PublishedKey("2026-a"), PublishedKey("2026-b")
    publish(httpserver, first)
    url = httpserver.url_for("/jwks.json")
    trigger = await incoming.trigger(body={"jwksUrl": url})
    assert trigger.raw["jwksUrl"] == url and "privateKey" not in trigger.raw

    assert (await incoming.token(sign(first.private_pem, trigger.claims(), kid="2026-a"))).status_code == 200
    # Without a kid, the published keys are tried.
    assert (await incoming.token(sign(first.private_pem, trigger.claims()))).status_code == 200
    assert fetches(httpserver) == 1

    # The client rotates: a new kid is fetched on first sight, but at most once a minute.
    publish(httpserver, first, second)
    a_minute_passes(app, url)
    assert (await incoming.token(sign(second.private_pem, trigger.claims(), kid="2026-b"))).status_code == 200
    assert fetches(httpserver) == 2
    unknown = sign(PublishedKey("2026-c").private_pem, trigger.claims(), kid="2026-c")
    response = await incoming.token(unknown)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert fetches(httpserver) == 2  # refetch refused inside the minute
    listed = (await incoming.client.get(f"/api/v1/flow/{trigger.sub}/trigger/jwt", headers=incoming.auth)).json()
    assert {k["kid"] for k in listed["triggers"][0]["keys"]} == {"2026-a", "2026-b"}

    # The JWKS host goes down: cached keys keep working.
    publish(httpserver, status=503)
    a_minute_passes(app, url)
    response = await incoming.token(unknown)
    assert response.status_code == 400 and "kid" in response.json()["error_description"]
    assert fetches(httpserver) == 3
    assert (await incoming.token(sign(first.private_pem, trigger.claims(), kid="2026-a"))).status_code == 200

    # A published kid can be revoked on ihub's side.
    response = await incoming.client.delete(
        f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}/key/2026-a", headers=incoming.auth
    )
    assert response.status_code == 200, response.text
    response = await incoming.token(sign(first.private_pem, trigger.claims(), kid="2026-a"))
    assert response.status_code == 400 and "revoked" in response.json()["error_description"]
    assert (await incoming.token(sign(first.private_pem, trigger.claims()))).status_code == 400
    assert (await incoming.token(sign(second.private_pem, trigger.claims(), kid="2026-b"))).status_code == 200


async def test_unusable_published_keys_are_ignored(incoming: Incoming, httpserver: HTTPServer) -> None:
    good = PublishedKey("good")
    weak_numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()
    weak = {"kty": "RSA", "n": b64int(weak_numbers.n), "e": b64int(weak_numbers.e)}
    httpserver.expect_request("/jwks.json").respond_with_json(
        {
            "keys": [
                {"kty": "oct", "k": "c2VjcmV0", "kid": "shared", "alg": "HS256"},
                {**weak, "kid": "weak"},
                {**RSAKey.generate_key(2048).as_dict(private=True), "kid": "leaked"},
                {**good.jwk, "use": "enc", "kid": "for-encryption"},
                good.jwk,
            ]
        }
    )
    trigger = await incoming.trigger(body={"jwksUrl": httpserver.url_for("/jwks.json")})
    assert (await incoming.token(sign(good.private_pem, trigger.claims(), kid="good"))).status_code == 200
    for kid in ("shared", "weak", "leaked", "for-encryption"):
        response = await incoming.token(sign(good.private_pem, trigger.claims(), kid=kid))
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant", kid


async def test_jwks_url_must_be_https_except_on_loopback(incoming: Incoming) -> None:
    flow = incoming.flows["create-issue"]
    for url in ("http://jwks.example.com/keys", "ftp://127.0.0.1/keys", "not a url"):
        response = await incoming.create(flow, {"jwksUrl": url})
        assert response.status_code == 400, url
        assert response.json()["metadata"]["code"] == "invalid_key"
    for url in ("https://jwks.example.com/.well-known/jwks.json", "http://localhost:9/jwks", "http://[::1]:9/jwks"):
        assert (await incoming.create(flow, {"jwksUrl": url})).status_code == 200, url


async def test_slow_jwks_host_times_out_and_cached_keys_stay(
    app: Any, incoming: Incoming, httpserver: HTTPServer
) -> None:
    key = PublishedKey("k1")
    publish(httpserver, key)
    url = httpserver.url_for("/jwks.json")
    trigger = await incoming.trigger(body={"jwksUrl": url})
    assert (await incoming.token(sign(key.private_pem, trigger.claims(), kid="k1"))).status_code == 200

    # The host holds its answer back until the test releases it (or 30 s pass): a hub that waited for the host
    # instead of its own fetch timeout would get the answer, so no clock reading is needed to tell the two apart.
    release, answered = threading.Event(), threading.Event()

    def slow(_request: Any) -> Response:
        release.wait(timeout=30)
        answered.set()
        return Response(json.dumps({"keys": [key.jwk]}), content_type="application/json")

    httpserver.clear_all_handlers()
    httpserver.expect_request("/jwks.json").respond_with_handler(slow)
    cache = incoming_state(app.state.context).jwks
    cache.timeout = 0.3  # the fetch timeout, shortened so the test stays quick
    a_minute_passes(app, url)
    try:
        response = await incoming.token(sign(key.private_pem, trigger.claims(), kid="k2"))
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
        assert not answered.is_set(), "the hub waited for the slow host instead of giving up after its timeout"
    finally:
        release.set()
    assert (await incoming.token(sign(key.private_pem, trigger.claims(), kid="k1"))).status_code == 200
