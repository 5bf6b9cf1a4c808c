"""The checks of the JWT-bearer grant and of the hub's access tokens, at their exact boundaries.

Unit tests of pure functions: each boundary is tested on both sides (a second before and at the edge), so an
off-by-one in a comparison, a wrong leeway or a swapped claim fails here.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from incoming_support import Incoming, Trigger

from ihub.common.errors import ApiError
from ihub.incoming.access import TOKEN_ISSUER, AccessClaims, AccessTokens, InvalidToken
from ihub.incoming.grant import LEEWAY_SECONDS, MAX_LIFETIME_SECONDS, _check_audience, _check_times

KEY = "unit-test-master-key-" + "k" * 32
NOW = 1_800_000_000


def refused(check: Any, *args: Any) -> str:
    with pytest.raises(ApiError) as error:
        check(*args)
    assert (error.value.status, error.value.code) == (400, "invalid_grant")
    return error.value.message


# -- exp, iat, nbf -------------------------------------------------------------------------------


def test_expiry_edge_with_leeway() -> None:
    assert _check_times({"exp": NOW - LEEWAY_SECONDS + 1, "iat": NOW - 600}, NOW) == NOW - LEEWAY_SECONDS + 1
    message = refused(_check_times, {"exp": NOW - LEEWAY_SECONDS, "iat": NOW - 600}, NOW)
    assert message == "assertion has expired (exp is in the past)"


def test_iat_in_the_future_edge() -> None:
    assert _check_times({"exp": NOW + 600, "iat": NOW + LEEWAY_SECONDS}, NOW) == NOW + 600
    message = refused(_check_times, {"exp": NOW + 600, "iat": NOW + LEEWAY_SECONDS + 1}, NOW)
    assert message == "iat is in the future: check the client's clock"


def test_nbf_edge() -> None:
    assert _check_times({"exp": NOW + 600, "iat": NOW, "nbf": NOW + LEEWAY_SECONDS}, NOW) == NOW + 600
    message = refused(_check_times, {"exp": NOW + 600, "iat": NOW, "nbf": NOW + LEEWAY_SECONDS + 1}, NOW)
    assert message == "assertion is not valid yet (nbf is in the future)"


def test_lifetime_edge() -> None:
    assert _check_times({"exp": NOW + MAX_LIFETIME_SECONDS, "iat": NOW}, NOW) == NOW + MAX_LIFETIME_SECONDS
    message = refused(_check_times, {"exp": NOW + MAX_LIFETIME_SECONDS + 1, "iat": NOW}, NOW)
    assert message == f"exp - iat is {MAX_LIFETIME_SECONDS + 1} s; at most {MAX_LIFETIME_SECONDS} s is allowed"


@pytest.mark.parametrize("missing", ["exp", "iat"])
def test_exp_and_iat_are_required(missing: str) -> None:
    claims = {"exp": NOW + 60, "iat": NOW}
    del claims[missing]
    assert missing in refused(_check_times, claims, NOW)


# -- aud -----------------------------------------------------------------------------------------

AUD = "https://hub.example/prod/incoming/token"


@pytest.mark.parametrize("aud", [AUD, [AUD], ["https://other.example", AUD]])
def test_audience_accepted(aud: Any) -> None:
    _check_audience({"aud": aud}, AUD)


@pytest.mark.parametrize(
    ("aud", "message"),
    [
        (None, f"claim aud is required (use {AUD})"),
        ("https://other.example", f"aud does not match this endpoint: expected {AUD}"),
        (["https://other.example"], f"aud does not match this endpoint: expected {AUD}"),
        ([], "claim aud must be a string or an array of strings"),
        ([AUD, 7], "claim aud must be a string or an array of strings"),
        (7, "claim aud must be a string or an array of strings"),
        ({"aud": AUD}, "claim aud must be a string or an array of strings"),
    ],
)
def test_audience_refused(aud: Any, message: str) -> None:
    claims = {} if aud is None else {"aud": aud}
    assert refused(_check_audience, claims, AUD) == message


# -- the hub's access tokens ---------------------------------------------------------------------


def test_access_token_lives_exactly_its_ttl() -> None:
    tokens = AccessTokens(KEY, 120)
    token = tokens.mint(client_id="c-1", flow_id=7, env="prod", key_id="k-1", now=NOW)
    assert tokens.verify(token, now=NOW + 119) == AccessClaims("c-1", 7, "prod", "k-1", NOW + 120)
    with pytest.raises(InvalidToken, match=r"^token has expired: get a new one from /incoming/token$"):
        tokens.verify(token, now=NOW + 120)


def test_access_tokens_of_another_key_or_issuer_are_refused() -> None:
    ours = AccessTokens(KEY, 120)
    theirs = AccessTokens("another-master-key-" + "z" * 32, 120)
    token = theirs.mint(client_id="c", flow_id=1, env="prod", key_id="", now=NOW)
    with pytest.raises(InvalidToken, match=r"^token was not issued by this hub \(unknown key\)$"):
        ours.verify(token, now=NOW)
    # A rotated-out master key still verifies the tokens it signed.
    rotated = AccessTokens("a-new-master-key-" + "n" * 32, 120, previous_master_keys=(KEY,))
    assert rotated.verify(ours.mint(client_id="c", flow_id=1, env="prod", key_id="", now=NOW), now=NOW).flow_id == 1

    import joserfc.jwt as jose_jwt

    foreign = dict(iss="someone-else", exp=NOW + 60, client="c", flow="1", env="prod")
    forged = jose_jwt.encode({"alg": "HS256", "kid": ours.kid}, foreign, ours._keys[ours.kid])
    with pytest.raises(InvalidToken, match=r"^token was not issued by the incoming token endpoint$"):
        ours.verify(forged, now=NOW)
    header = {"alg": "HS256", "kid": ours.kid}
    lacking = jose_jwt.encode(header, {"iss": TOKEN_ISSUER, "exp": NOW + 60}, ours._keys[ours.kid])
    with pytest.raises(InvalidToken, match=r"^token lacks its client, flow or env$"):
        ours.verify(lacking, now=NOW)
    # Tokens minted before keys were recorded carry no akid: they name no key (and so no revoked key).
    no_akid = jose_jwt.encode(header, {**foreign, "iss": TOKEN_ISSUER}, ours._keys[ours.kid])
    assert ours.verify(no_akid, now=NOW) == AccessClaims("c", 1, "prod", "", NOW + 60)
    good = ours.mint(client_id="c", flow_id=1, env="prod", key_id="", now=NOW)
    head, payload, _ = good.split(".")
    with pytest.raises(InvalidToken, match=r"^token signature or format is invalid \(BadSignatureError\)$"):
        ours.verify(f"{head}.{payload}.{'A' * 43}", now=NOW)


# -- jti: single use until the assertion expires -------------------------------------------------


@pytest.mark.anyio
async def test_a_jti_is_usable_again_once_its_assertion_expired(
    incoming: Incoming, trigger: Trigger, clock: Any
) -> None:
    assertion = trigger.assertion(jti="once")
    assert (await incoming.token(assertion)).status_code == 200
    again = await incoming.token(trigger.assertion(jti="once"))
    assert again.status_code == 400
    assert again.json()["error_description"] == "jti has already been used: every assertion needs a new jti"
    # Within the leeway after exp the assertion itself is still accepted, so its jti must still be refused.
    clock.advance_to(1200 + LEEWAY_SECONDS - 5)
    replay = await incoming.token(assertion)
    assert replay.json().get("error_description") == "jti has already been used: every assertion needs a new jti"
    # Past the first assertion's exp (+ leeway) the record is stale: a new assertion may carry the jti.
    shift = 1200 + LEEWAY_SECONDS + 5
    clock.advance_to(shift)
    later = int(time.time()) + shift
    response = await incoming.token(trigger.assertion(jti="once", iat=later, exp=later + 600))
    assert response.status_code == 200, response.text
