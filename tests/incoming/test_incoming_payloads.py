"""Payloads that are legal to send but awkward to store: never a 500, on either backend."""

from __future__ import annotations

import json
from typing import Any

import pytest
from incoming_support import Incoming, Trigger, rs256_raw

pytestmark = pytest.mark.anyio


async def test_awkward_payloads(app: Any, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    json_type = {"Content-Type": "application/json"}
    stored = [
        (b'{"text": "nul \\u0000 inside"}', json_type),
        (b"plain \x00 nul", {"Content-Type": "text/plain"}),
    ]
    for raw, headers in stored:
        response = await incoming.webhook(token, content=raw, headers=headers)
        assert response.status_code == 202, (raw, response.text)
    refused = [b'{"x": NaN}', b'{"x": -Infinity}', b'{"big": 1e400}', b"[" * 100_000 + b"]" * 100_000]
    for raw in refused:
        response = await incoming.webhook(token, content=raw, headers=json_type)
        assert response.status_code == 400, (raw[:20], response.text)
        assert response.json()["error"] == "invalid_request"


async def test_non_finite_numeric_dates_are_refused(incoming: Incoming, trigger: Trigger) -> None:
    claims = trigger.claims()
    for exp in ("NaN", "Infinity", "1e400"):
        text = json.dumps(claims).replace(f'"exp": {claims["exp"]}', f'"exp": {exp}')
        response = await incoming.token(rs256_raw(trigger.private_key, text))
        assert response.status_code == 400, (exp, response.text)
        assert response.json()["error"] == "invalid_grant"
    # The same hand assembly with the real exp passes: the refusals are about the numbers.
    assert (await incoming.token(rs256_raw(trigger.private_key, json.dumps(claims)))).status_code == 200


async def test_nul_and_oversized_identifiers_are_not_found(incoming: Incoming, trigger: Trigger) -> None:
    for iss in ("client\x00id", "x" * 5000):
        response = await incoming.token(trigger.assertion(iss=iss))
        assert response.status_code == 401 and response.json()["error"] == "invalid_client", response.text
    base = f"/api/v1/flow/{trigger.sub}/trigger/jwt"
    for url in (f"{base}/bad%00iss", f"{base}/{trigger.iss}/key/bad%00kid", f"{base}/{'x' * 300}"):
        response = await incoming.client.delete(url, headers=incoming.auth)
        assert response.status_code == 404, (url, response.text)
    response = await incoming.create(trigger.sub, {"generateKey": True, "iss": "a\x00b"})
    assert response.status_code in (400, 404), response.text
