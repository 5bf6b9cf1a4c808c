"""Properties of the token endpoint and the webhook, whatever a client signs or sends.

Each test is a Hypothesis property: a failing input is shrunk to the smallest that still fails and kept in the
example database (.hypothesis/), so the next run tries it first. Example counts and the database come from
the profiles registered in tests/conftest.py (HYPOTHESIS_PROFILE=dev|ci).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from incoming_support import AUD, Incoming, Trigger, rs256_raw

pytestmark = pytest.mark.anyio

# The fixtures (one hub, one trigger client) are made once per test and shared by its examples: each example
# is one independent request, so sharing is what a real hub sees, and it keeps the test fast.
SHARED_FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
claim_names = st.sampled_from(["iss", "sub", "aud", "iat", "exp", "nbf", "jti", "flow"])
# Without any of these an assertion names no client, no flow, no audience or no lifetime (RFC 7523 §3).
REQUIRED_CLAIMS = {"iss", "sub", "aud", "iat", "exp"}
OAUTH_ERRORS = {"invalid_request", "invalid_grant", "invalid_client", "unsupported_grant_type"}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def sqlite_only(db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("parsing does not depend on the backend (PostgreSQL-only edge values: test_incoming_payloads)")


def assert_token_answer(response: httpx.Response) -> None:
    """200 with a bearer token, or an RFC 6749 §5.2 error body; never a server error."""
    assert response.status_code in (200, 400, 401), response.text
    body = response.json()
    if response.status_code == 200:
        assert body["token_type"] == "Bearer" and body["access_token"]
    else:
        assert body["error"] in OAUTH_ERRORS and body.get("error_description"), body


@SHARED_FIXTURES
@given(changes=st.dictionaries(claim_names, json_values, max_size=4), drop=st.lists(claim_names, max_size=2))
@example(changes={}, drop=[])
@example(changes={"exp": "tomorrow"}, drop=[])
@example(changes={}, drop=["aud"])
async def test_signed_claims_of_any_shape(
    sqlite_only: None, incoming: Incoming, trigger: Trigger, changes: dict[str, Any], drop: list[str]
) -> None:
    claims = {**trigger.claims(aud=AUD), **changes}
    for name in drop:
        claims.pop(name, None)
    response = await incoming.token(rs256_raw(trigger.private_key, json.dumps(claims)))
    assert_token_answer(response)
    if REQUIRED_CLAIMS - claims.keys():
        assert response.status_code != 200, f"accepted without {sorted(REQUIRED_CLAIMS - claims.keys())}"
    if not changes:
        # Dropping only optional claims from a valid assertion keeps it valid.
        assert (response.status_code == 200) == (not REQUIRED_CLAIMS & set(drop)), response.text


@SHARED_FIXTURES
@given(
    header=st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()),
    payload=st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()),
)
async def test_unsigned_garbage_is_never_a_token(
    sqlite_only: None, incoming: Incoming, header: bytes, payload: bytes
) -> None:
    response = await incoming.token(f"{b64(header)}.{b64(payload)}.c2ln")
    assert_token_answer(response)
    assert response.status_code != 200


@pytest.fixture
async def access_token(incoming: Incoming, trigger: Trigger) -> str:
    return await incoming.access_token(trigger)


@SHARED_FIXTURES
@given(
    body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(["application/json", "text/plain", "application/xml", ""]),
)
@example(body=b"{", content_type="application/json")
@example(body=b"[", content_type="")
async def test_any_webhook_body_is_accepted_or_refused_cleanly(
    sqlite_only: None, incoming: Incoming, access_token: str, body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await incoming.webhook(access_token, content=body, headers=headers)
    assert response.status_code in (202, 400), response.text
    if response.status_code == 202:
        assert response.json()["runId"]
    else:
        assert "not valid JSON" in response.text
        # A 400 only for a body that is JSON by its type (or, untyped, by its first byte) and does not parse.
        assert content_type == "application/json" or (not content_type and body[:1] in (b"{", b"["))
