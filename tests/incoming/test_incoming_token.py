"""POST /{env}/incoming/token: the RFC 7523 grant, and one refusal per check with its RFC 6749 §5.2 code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from incoming_support import AUD, GRANT, PUBLIC_URL, Incoming, Trigger, b64, sign

pytestmark = pytest.mark.anyio


def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def assert_oauth_error(response: Any, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert mentions.lower() in body["error_description"].lower(), body
    assert response.headers["cache-control"] == "no-store"


async def test_seed_assertion_gets_a_bearer_token(incoming: Incoming, trigger: Trigger) -> None:
    assert trigger.aud == AUD
    assert trigger.sub == incoming.flows["create-issue"]
    response = await incoming.token(trigger.assertion())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert body["access_token"].count(".") == 2
    assert response.headers["cache-control"] == "no-store"


GRANT_TYPES = [
    GRANT,
    "urn:ietf:params:oauth:grant-type:jwt-ihub:jwt:bearer",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
]


async def test_every_documented_grant_type_works_as_json_and_form(incoming: Incoming, trigger: Trigger) -> None:
    for grant_type in GRANT_TYPES:
        response = await incoming.token(trigger.assertion(jti="a-" + grant_type), grant_type=grant_type)
        assert response.status_code == 200, (grant_type, response.text)
        form = {"grant_type": grant_type, "assertion": trigger.assertion(jti="b-" + grant_type)}
        response = await incoming.client.post("/prod/incoming/token", data=form)
        assert response.status_code == 200, (grant_type, response.text)


async def test_seed_claims_with_flow_kid_nbf_and_audience_array_pass(incoming: Incoming, trigger: Trigger) -> None:
    now = int(time.time())
    claims = trigger.claims(flow=trigger.sub, nbf=now - 5, aud=["https://elsewhere.example/token", AUD])
    response = await incoming.token(sign(trigger.private_key, claims, kid=trigger.kid))
    assert response.status_code == 200, response.text


async def test_default_path_and_test_env_use_their_own_audience(incoming: Incoming, trigger: Trigger) -> None:
    for path in ("/incoming/token", "/test/incoming/token"):
        response = await incoming.token(trigger.assertion(aud=PUBLIC_URL + path), path=path)
        assert response.status_code == 200, response.text
    # The prod audience is not valid at the test env's endpoint.
    response = await incoming.token(trigger.assertion(), path="/test/incoming/token")
    assert_oauth_error(response, 400, "invalid_grant", "aud")


async def test_unknown_env_is_not_found(incoming: Incoming, trigger: Trigger) -> None:
    response = await incoming.token(trigger.assertion(aud=PUBLIC_URL + "/dev/incoming/token"), "/dev/incoming/token")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def hs256_with_public_key(trigger: Trigger) -> str:
    """The classic key-confusion attack: HMAC keyed with the (public) RSA key."""
    secret = public_pem(trigger.private_key).encode()
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(trigger.claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def unsigned(trigger: Trigger) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(trigger.claims())}."


def with_claims(**overrides: Any) -> Callable[[Trigger], str]:
    """Claims given as callables are evaluated when the assertion is made, not when the module loads
    (a table of times built at import goes stale in a long test run)."""
    return lambda trigger: trigger.assertion(**{k: v() if callable(v) else v for k, v in overrides.items()})


def now_plus(seconds: int) -> int:
    return int(time.time()) + seconds


# (name, assertion builder, expected status, error code, word the description must contain)
REFUSALS: list[tuple[str, Callable[[Trigger], str], int, str, str]] = [
    ("wrong signature", lambda t: sign(rsa_pem(), t.claims()), 400, "invalid_grant", "signature"),
    ("alg none", unsigned, 400, "invalid_grant", "alg none"),
    ("HS256 keyed with the public key", hs256_with_public_key, 400, "invalid_grant", "HS256"),
    ("wrong aud", with_claims(aud="https://ihubprod.rixter.net/prod/incoming/token"), 400, "invalid_grant", "aud"),
    ("aud of another env", with_claims(aud=PUBLIC_URL + "/test/incoming/token"), 400, "invalid_grant", "aud"),
    ("expired", with_claims(iat=lambda: now_plus(-2000), exp=lambda: now_plus(-800)), 400, "invalid_grant", "expired"),
    (
        "iat in the future",
        with_claims(iat=lambda: now_plus(300), exp=lambda: now_plus(900)),
        400,
        "invalid_grant",
        "iat",
    ),
    ("nbf in the future", with_claims(nbf=lambda: now_plus(600)), 400, "invalid_grant", "nbf"),
    ("exp - iat too long", with_claims(exp=lambda: now_plus(1201 + 60)), 400, "invalid_grant", "exp - iat"),
    ("missing exp", with_claims(exp=None), 400, "invalid_grant", "exp is required"),
    ("missing iat", with_claims(iat=None), 400, "invalid_grant", "iat is required"),
    ("missing sub", with_claims(sub=None), 400, "invalid_grant", "sub is required"),
    ("missing aud", with_claims(aud=None), 400, "invalid_grant", "aud is required"),
    ("missing iss", with_claims(iss=None), 400, "invalid_grant", "iss is required"),
    ("iat as a string", with_claims(iat="currentTimeSeconds"), 400, "invalid_grant", "iat must be a NumericDate"),
    ("sub as a number", lambda t: t.assertion(sub=int(t.sub)), 400, "invalid_grant", "sub must be"),
    ("aud as a number", with_claims(aud=42), 400, "invalid_grant", "aud must be"),
    ("unknown iss", with_claims(iss="4f019d43-4900-3a98-aa06-46143f40c061"), 401, "invalid_client", "iss"),
    ("flow claim differs from sub", with_claims(flow="999999"), 400, "invalid_grant", "flow"),
    ("not a JWS", lambda t: "not.a-jwt", 400, "invalid_grant", "compact JWS"),
]


async def test_refusals(incoming: Incoming, trigger: Trigger) -> None:
    """One case per check (run in one test to share the set-up); each names the check that failed."""
    for name, build, status, code, mentions in REFUSALS:
        response = await incoming.token(build(trigger))
        try:
            assert_oauth_error(response, status, code, mentions)
        except AssertionError as error:
            raise AssertionError(f"case {name!r}: {error}") from None


async def test_request_shape_errors(incoming: Incoming, trigger: Trigger) -> None:
    good = trigger.assertion()
    response = await incoming.token(good, grant_type="client_credentials")
    assert_oauth_error(response, 400, "unsupported_grant_type", "grant_type")
    response = await incoming.client.post("/prod/incoming/token", json={"assertion": good})
    assert_oauth_error(response, 400, "invalid_request", "grant_type")
    response = await incoming.client.post("/prod/incoming/token", json={"grant_type": GRANT})
    assert_oauth_error(response, 400, "invalid_request", "assertion")
    response = await incoming.client.post("/prod/incoming/token", json=["grant_type", GRANT])
    assert_oauth_error(response, 400, "invalid_request")
    response = await incoming.client.post(
        "/prod/incoming/token", content=b"<xml/>", headers={"Content-Type": "application/xml"}
    )
    assert_oauth_error(response, 400, "invalid_request", "content type")


async def test_oversized_assertion(incoming: Incoming, trigger: Trigger) -> None:
    padded = trigger.assertion(padding="x" * 9000)
    assert len(padded) > 8192
    response = await incoming.token(padded)
    assert_oauth_error(response, 400, "invalid_request", "8192 bytes")
    # Just under the limit still works.
    fits = trigger.assertion(padding="x" * 5000)
    assert len(fits) < 8192
    assert (await incoming.token(fits)).status_code == 200


async def test_replayed_jti_is_refused(incoming: Incoming, trigger: Trigger) -> None:
    assertion = trigger.assertion(jti="one-time-1")
    assert (await incoming.token(assertion)).status_code == 200
    assert_oauth_error(await incoming.token(assertion), 400, "invalid_grant", "jti")
    # The same jti at another client is a different assertion.
    other = await incoming.trigger()
    assert (await incoming.token(other.assertion(jti="one-time-1"))).status_code == 200


async def test_without_jti_an_assertion_may_be_reused_until_exp(incoming: Incoming, trigger: Trigger) -> None:
    # The seed's samples send no jti and sign once per test run; reuse within exp is what they rely on.
    assertion = trigger.assertion()
    assert (await incoming.token(assertion)).status_code == 200
    assert (await incoming.token(assertion)).status_code == 200


async def test_disabled_client_is_refused(incoming: Incoming, trigger: Trigger) -> None:
    response = await incoming.client.put(
        f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}", json={"enabled": False}, headers=incoming.auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["triggers"][0]["enabled"] is False
    assert_oauth_error(await incoming.token(trigger.assertion()), 401, "invalid_client", "disabled")
    await incoming.client.put(
        f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}", json={"enabled": True}, headers=incoming.auth
    )
    assert (await incoming.token(trigger.assertion())).status_code == 200


async def test_revoked_key_is_refused_and_a_rotated_key_works(incoming: Incoming, trigger: Trigger) -> None:
    response = await incoming.create(trigger.sub, {"generateKey": True, "iss": trigger.iss})
    assert response.status_code == 200, response.text
    rotated = response.json()["triggers"][0]
    assert rotated["iss"] == trigger.iss and rotated["kid"] != trigger.kid
    assert [k["kid"] for k in rotated["keys"]] == [trigger.kid, rotated["kid"]]
    new_key = rotated["privateKey"]

    response = await incoming.client.delete(
        f"/api/v1/flow/{trigger.sub}/trigger/jwt/{trigger.iss}/key/{trigger.kid}", headers=incoming.auth
    )
    assert response.status_code == 200, response.text
    keys = {k["kid"]: k["revoked"] for k in response.json()["triggers"][0]["keys"]}
    assert keys == {trigger.kid: True, rotated["kid"]: False}

    # Named by kid, or found by trying the client's keys: either way the revoked key is refused.
    old_by_kid = sign(trigger.private_key, trigger.claims(), kid=trigger.kid)
    assert_oauth_error(await incoming.token(old_by_kid), 400, "invalid_grant", "revoked")
    assert_oauth_error(await incoming.token(trigger.assertion()), 400, "invalid_grant", "signature")
    assert (await incoming.token(sign(new_key, trigger.claims()))).status_code == 200
    assert (await incoming.token(sign(new_key, trigger.claims(), kid=rotated["kid"]))).status_code == 200


async def test_sub_must_be_the_clients_own_jwt_flow(incoming: Incoming, trigger: Trigger) -> None:
    other_flow = incoming.flows["other"]
    response = await incoming.token(trigger.assertion(sub=other_flow))
    assert_oauth_error(response, 400, "invalid_grant", "sub")
    # A manual flow cannot get a jwt client at all.
    response = await incoming.create(incoming.flows["by-hand"])
    assert response.status_code == 400
    assert "jwt" in response.json()["metadata"]["message"]


async def test_kid_chooses_only_among_the_clients_own_keys(incoming: Incoming, trigger: Trigger) -> None:
    other = await incoming.trigger()
    # Signed by the other client's key and naming its kid, but claiming to be `trigger`'s client.
    forged = sign(other.private_key, trigger.claims(), kid=other.kid)
    assert_oauth_error(await incoming.token(forged), 400, "invalid_grant", "kid")
    assert_oauth_error(await incoming.token(sign(other.private_key, trigger.claims())), 400, "invalid_grant")


async def test_uploaded_ec_key_verifies_es256_only(incoming: Incoming) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    trigger = await incoming.trigger(body={"publicKey": public_pem(pem)})
    assert trigger.private_key == "" and "privateKey" not in trigger.raw
    assert trigger.raw["keys"][0]["alg"] == "ES256"
    assert (await incoming.token(sign(pem, trigger.claims(), alg="ES256"))).status_code == 200
    response = await incoming.token(sign(rsa_pem(), trigger.claims()))
    assert_oauth_error(response, 400, "invalid_grant", "expected ES256")


async def test_rsa_key_registered_for_ps256_refuses_rs256(incoming: Incoming) -> None:
    pem = rsa_pem()
    trigger = await incoming.trigger(body={"publicKey": public_pem(pem), "alg": "PS256"})
    assert (await incoming.token(sign(pem, trigger.claims(), alg="PS256"))).status_code == 200
    assert_oauth_error(await incoming.token(sign(pem, trigger.claims())), 400, "invalid_grant", "RS256")
    # And the default RSA key refuses PS256.
    default = await incoming.trigger()
    response = await incoming.token(sign(default.private_key, default.claims(), alg="PS256"))
    assert_oauth_error(response, 400, "invalid_grant", "PS256")
