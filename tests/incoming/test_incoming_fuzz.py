"""Whatever a client signs or sends, the token endpoint and the webhook answer 2xx/4xx, never 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from incoming_support import Incoming, Trigger, rs256_raw

pytestmark = pytest.mark.anyio

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
claim_names = st.sampled_from(["iss", "sub", "aud", "iat", "exp", "nbf", "jti", "flow"])


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def sqlite_only(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("parsing does not depend on the backend (PostgreSQL-only edge values: test_incoming_payloads)")


async def test_signed_claims_of_any_shape(sqlite_only: None, incoming: Incoming, trigger: Trigger) -> None:
    seen: list[int] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(changes=st.dictionaries(claim_names, json_values, max_size=4), drop=st.lists(claim_names, max_size=2))
    def build(changes: dict[str, Any], drop: list[str]) -> None:
        claims = {**trigger.claims(), **changes}
        for name in drop:
            claims.pop(name, None)
        cases.append(rs256_raw(trigger.private_key, json.dumps(claims)))

    cases: list[str] = []
    build()
    for assertion in cases:
        response = await incoming.token(assertion)
        assert response.status_code in (200, 400, 401), response.text
        seen.append(response.status_code)
    assert 400 in seen


async def test_raw_assertions_and_bodies(sqlite_only: None, incoming: Incoming, trigger: Trigger) -> None:
    token = await incoming.access_token(trigger)
    pieces: list[tuple[str, bytes, str]] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        header=st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()),
        payload=st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()),
        body=st.binary(max_size=200),
        content_type=st.sampled_from(["application/json", "text/plain", "application/xml", ""]),
    )
    def build(header: bytes, payload: bytes, body: bytes, content_type: str) -> None:
        pieces.append((f"{b64(header)}.{b64(payload)}.c2ln", body, content_type))

    build()
    for assertion, body, content_type in pieces:
        response = await incoming.token(assertion)
        assert response.status_code in (400, 401), response.text
        headers = {"Content-Type": content_type} if content_type else {}
        response = await incoming.webhook(token, content=body, headers=headers)
        assert response.status_code in (202, 400), response.text
