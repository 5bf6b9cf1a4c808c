"""/api/v1/flow/{id}/trigger/jwt: the trigger page's data, who may change it, and what it never shows."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from incoming_support import PUBLIC_URL, Incoming

from db_snapshot import NothingWritten

pytestmark = pytest.mark.anyio


def pem_pair(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = serialization.PublicFormat.SubjectPublicKeyInfo
    return private, key.public_key().public_bytes(serialization.Encoding.PEM, info).decode()


async def test_generated_key_is_shown_once(incoming: Incoming) -> None:
    flow = incoming.flows["create-issue"]
    response = await incoming.create(flow)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()["triggers"][0]
    assert created["privateKey"].startswith("-----BEGIN PRIVATE KEY-----")
    assert created["sub"] == flow == created["flowId"]
    assert created["aud"] == f"{PUBLIC_URL}/prod/incoming/token"
    assert created["tokenUrls"] == {
        "prod": f"{PUBLIC_URL}/prod/incoming/token",
        "test": f"{PUBLIC_URL}/test/incoming/token",
    }
    assert created["webhookUrl"] == f"{PUBLIC_URL}/prod/incoming/webhook/jwt"
    assert created["webhookUrls"]["test"] == f"{PUBLIC_URL}/test/incoming/webhook/jwt"
    assert created["enabled"] is True
    [key] = created["keys"]
    assert key["kid"] == created["kid"] and key["alg"] == "RS256" and key["revoked"] is False and key["createdAt"]

    listed = await incoming.client.get(f"/api/v1/flow/{flow}/trigger/jwt", headers=incoming.auth)
    assert listed.status_code == 200
    assert "PRIVATE KEY" not in listed.text and "privateKey" not in listed.text
    [shown] = listed.json()["triggers"]
    assert shown["iss"] == created["iss"] and shown["keys"] == created["keys"]


async def test_form_encoded_create_and_uploaded_public_keys(incoming: Incoming) -> None:
    flow = incoming.flows["create-issue"]
    response = await incoming.client.post(
        f"/api/v1/flow/{flow}/trigger/jwt", data={"generateKey": "true"}, headers=incoming.auth
    )
    assert response.status_code == 200 and response.json()["triggers"][0]["privateKey"]

    private, public = pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    response = await incoming.create(flow, {"publicKey": public})
    assert response.status_code == 200
    trigger = response.json()["triggers"][0]
    assert "privateKey" not in trigger and trigger["keys"][0]["source"] == "uploaded"
    # The same key twice on one client is a conflict.
    again = await incoming.create(flow, {"publicKey": public, "iss": trigger["iss"]})
    assert again.status_code == 409


BAD_BODIES: list[dict] = [
    {},
    {"generateKey": False},
    {"generateKey": True, "publicKey": "x"},
    {"publicKey": "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----"},
    {"publicKey": "PRIVATE"},
    {"generateKey": True, "alg": "HS256"},
    {"generateKey": True, "alg": "ES256"},
    {"generateKey": True, "iss": "no-such-client"},
    {"generateKey": True, "unknown": 1},
]


async def test_bad_create_requests(incoming: Incoming) -> None:
    for body in BAD_BODIES:
        response = await incoming.create(incoming.flows["create-issue"], body)
        expected = 404 if "iss" in body else 400
        assert response.status_code == expected, (body, response.text)
        assert "PRIVATE KEY" not in response.text
    listed = await incoming.client.get(
        f"/api/v1/flow/{incoming.flows['create-issue']}/trigger/jwt", headers=incoming.auth
    )
    assert listed.json() == {"triggers": []}


async def test_weak_private_and_foreign_keys_are_refused(incoming: Incoming) -> None:
    flow = incoming.flows["create-issue"]
    private, weak_public = pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    response = await incoming.create(flow, {"publicKey": weak_public})
    assert response.status_code == 400 and "2048" in response.json()["metadata"]["message"]
    response = await incoming.create(flow, {"publicKey": private})
    assert response.status_code == 400 and "private key" in response.json()["metadata"]["message"]
    _, p384 = pem_pair(ec.generate_private_key(ec.SECP384R1()))
    response = await incoming.create(flow, {"publicKey": p384})
    assert response.status_code == 400 and "P-256" in response.json()["metadata"]["message"]


async def test_who_may_see_and_manage_triggers(app: Any, incoming: Incoming) -> None:
    flow = incoming.flows["create-issue"]
    created = (await incoming.create(flow)).json()["triggers"][0]
    iss, kid = created["iss"], created["kid"]

    member = await incoming.login("1", "Member")
    admin = await incoming.login("1", "Admin")
    assert (await incoming.client.get(f"/api/v1/flow/{flow}/trigger/jwt", headers=member)).status_code == 200
    for method, url, body in [
        ("POST", f"/api/v1/flow/{flow}/trigger/jwt", {"generateKey": True}),
        ("PUT", f"/api/v1/flow/{flow}/trigger/jwt/{iss}", {"enabled": False}),
        ("DELETE", f"/api/v1/flow/{flow}/trigger/jwt/{iss}/key/{kid}", None),
        ("DELETE", f"/api/v1/flow/{flow}/trigger/jwt/{iss}", None),
    ]:
        async with NothingWritten(app):
            response = await incoming.client.request(method, url, json=body, headers=member)
        assert response.status_code == 403, (method, url, response.text)
    response = await incoming.client.post(f"/api/v1/flow/{flow}/trigger/jwt", json={"generateKey": True}, headers=admin)
    assert response.status_code == 200

    # An Owner of a sibling organization does not see the flow at all.
    sibling = await incoming.login(await incoming.org(), "Owner")
    for method, url in [("GET", f"/api/v1/flow/{flow}/trigger/jwt"), ("POST", f"/api/v1/flow/{flow}/trigger/jwt")]:
        async with NothingWritten(app):
            response = await incoming.client.request(method, url, json={"generateKey": True}, headers=sibling)
        assert response.status_code == 404, response.text
    assert (await incoming.client.get(f"/api/v1/flow/{flow}/trigger/jwt")).status_code == 401
    assert (await incoming.client.get("/api/v1/flow/999999/trigger/jwt", headers=incoming.auth)).status_code == 404
    assert (await incoming.client.get("/api/v1/flow/abc/trigger/jwt", headers=incoming.auth)).status_code == 404
    # A client is addressed under its own flow only.
    other = incoming.flows["other"]
    response = await incoming.client.put(
        f"/api/v1/flow/{other}/trigger/jwt/{iss}", json={"enabled": False}, headers=incoming.auth
    )
    assert response.status_code == 404
