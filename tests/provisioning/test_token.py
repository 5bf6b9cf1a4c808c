"""POST /api/v1/token: the exchange, its response, and every way it must refuse."""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import httpx
import pytest
from sqlalchemy import update

from ihub.provisioning.models import ApiToken

pytestmark = pytest.mark.anyio


def sign(secret: str, nonce: str) -> str:
    return hashlib.sha256((secret + nonce).encode()).hexdigest()


def credentials(user_id: str | int, secret: str, nonce: str | None = None) -> dict[str, object]:
    nonce = str(uuid.uuid1()) if nonce is None else nonce
    return {"userId": user_id, "nonce": nonce, "hash": sign(secret, nonce)}


async def orgs_with(client: httpx.AsyncClient, token: str, scheme: str = "") -> httpx.Response:
    return await client.get("/api/v1/org", headers={"Authorization": f"{scheme}{token}"})


# -- the happy paths -----------------------------------------------------------------------------


async def test_json_body_returns_both_lists_and_no_store(client, owner):
    before = datetime.now(UTC)
    response = await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"tokens", "token"}
    assert body["tokens"] == body["token"]
    [entry] = body["tokens"]
    assert set(entry) == {"token", "expires", "expiresIn", "userId"}
    assert entry["userId"] == owner.user_id
    assert entry["expiresIn"] == 3600
    expires = datetime.fromisoformat(entry["expires"])
    assert expires.tzinfo is not None
    assert before + timedelta(seconds=3590) < expires < before + timedelta(seconds=3610)
    assert (await orgs_with(client, entry["token"])).status_code == 200


async def test_form_body(client, owner):
    response = await client.post("/api/v1/token", data=credentials(owner.user_id, owner.secret))
    assert response.status_code == 200, response.text
    assert (await orgs_with(client, response.json()["tokens"][0]["token"])).status_code == 200


async def test_id_is_accepted_instead_of_user_id_and_numbers_too(client, owner):
    for field, value in (("id", owner.user_id), ("id", int(owner.user_id)), ("userId", int(owner.user_id))):
        body = credentials(value, owner.secret)
        body[field] = body.pop("userId")
        response = await client.post("/api/v1/token", json=body)
        assert response.status_code == 200, (field, value, response.text)
        assert response.json()["tokens"][0]["userId"] == owner.user_id
    form = credentials(owner.user_id, owner.secret)
    form["id"] = form.pop("userId")
    assert (await client.post("/api/v1/token", data=form)).status_code == 200


async def test_upper_case_hex_hash(client, owner):
    body = credentials(owner.user_id, owner.secret)
    body["hash"] = str(body["hash"]).upper()
    assert (await client.post("/api/v1/token", json=body)).status_code == 200


async def test_authorization_bare_or_bearer(client, owner_token):
    for scheme in ("", "Bearer ", "bearer ", "BEARER  "):
        response = await orgs_with(client, owner_token, scheme)
        assert response.status_code == 200, (scheme, response.text)


@pytest.mark.parametrize("settings_overrides", [{"api_token_ttl_seconds": 120}])
async def test_ttl_is_configurable_and_enforced(client, owner, clock):
    """IHUB_API_TOKEN_TTL_SECONDS by its effect: the token works until its lifetime is over, then never."""
    response = await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))
    entry = response.json()["tokens"][0]
    assert entry["expiresIn"] == 120
    assert datetime.fromisoformat(entry["expires"]) < datetime.now(UTC) + timedelta(seconds=125)
    clock.advance_to(110)
    assert (await orgs_with(client, entry["token"])).status_code == 200
    clock.advance_to(130)
    response = await orgs_with(client, entry["token"])
    assert response.status_code == 401
    assert "expired" in response.json()["metadata"]["message"]


@pytest.mark.parametrize("settings_overrides", [{"api_token_ttl_seconds": 60}])
async def test_token_is_refused_at_the_instant_it_expires(client, owner, clock):
    clock.freeze()
    response = await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))
    token = response.json()["tokens"][0]["token"]
    clock.advance_to(59.999)
    assert (await orgs_with(client, token)).status_code == 200
    clock.advance_to(60)
    assert (await orgs_with(client, token)).status_code == 401


async def test_default_ttl_is_an_hour(client, owner_token, clock):
    clock.advance_to(3500)
    assert (await orgs_with(client, owner_token)).status_code == 200
    clock.advance_to(3610)
    assert (await orgs_with(client, owner_token)).status_code == 401


# -- tokens that must not work -------------------------------------------------------------------


async def test_missing_or_garbage_token(client, owner_token):
    headers = [None, "", "Bearer", "Bearer ", "garbage", "Bearer garbage", "Basic dXNlcjpwYXNz", "x" * 5000]
    # A real token with a scheme it does not come with, or altered, is garbage too.
    headers += [f"Basic {owner_token}", owner_token[:-1], owner_token + "x", owner_token.upper()]
    for header in headers:
        response = await client.get("/api/v1/org", headers={} if header is None else {"Authorization": header})
        assert response.status_code == 401, (header, response.text)
        assert response.json()["metadata"]["status"] == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_expired_token_is_refused(client, app, owner_token):
    assert (await orgs_with(client, owner_token)).status_code == 200
    async with app.state.context.sessions() as session:
        await session.execute(update(ApiToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        await session.commit()
    response = await orgs_with(client, owner_token)
    assert response.status_code == 401
    assert "expired" in response.json()["metadata"]["message"]


async def test_token_stops_working_when_user_is_deleted(client, api):
    user = await api.add_user("1", "Admin")
    token = (await client.post("/api/v1/token", json=credentials(user.user_id, user.secret))).json()["token"][0]
    assert (await orgs_with(client, token["token"])).status_code == 200
    assert (await client.delete(f"/api/v1/user/{user.user_id}", headers=api.auth)).status_code == 200
    assert (await orgs_with(client, token["token"])).status_code == 401
    # And the secret cannot buy a new one.
    again = await client.post("/api/v1/token", json=credentials(user.user_id, user.secret))
    assert again.status_code == 401


async def test_regenerated_key_revokes_old_tokens_and_secret(client, api):
    user = await api.add_user("1", "Owner")
    old_token = (await client.post("/api/v1/token", json=credentials(user.user_id, user.secret))).json()["tokens"][0]
    new_secret = await api.new_key(user.user_id)
    assert new_secret != user.secret
    assert (await orgs_with(client, old_token["token"])).status_code == 401
    refused = await client.post("/api/v1/token", json=credentials(user.user_id, user.secret))
    assert refused.status_code == 401
    accepted = await client.post("/api/v1/token", json=credentials(user.user_id, new_secret))
    assert accepted.status_code == 200
    assert (await orgs_with(client, accepted.json()["tokens"][0]["token"])).status_code == 200


# -- refused exchanges ---------------------------------------------------------------------------


async def test_nonce_is_accepted_once(client, owner):
    nonce = str(uuid.uuid1())
    first = await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret, nonce))
    assert first.status_code == 200
    again = await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret, nonce))
    assert again.status_code == 401
    assert again.json()["metadata"]["code"] == "nonce_reused"
    assert "nonce already used" in again.json()["metadata"]["message"]
    # Also when the reused nonce arrives form-encoded, with the hash in upper case.
    body = credentials(owner.user_id, owner.secret, nonce)
    body["hash"] = str(body["hash"]).upper()
    assert (await client.post("/api/v1/token", data=body)).status_code == 401
    fresh = await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))
    assert fresh.status_code == 200


async def test_nonce_is_per_key(client, api):
    """Another user may pick the same nonce; a regenerated key starts a fresh nonce history."""
    user = await api.add_user("1", "Member")
    nonce = "shared-nonce-0001"
    assert (await client.post("/api/v1/token", json=credentials(user.user_id, user.secret, nonce))).status_code == 200
    other = await api.add_user("1", "Member")
    assert (await client.post("/api/v1/token", json=credentials(other.user_id, other.secret, nonce))).status_code == 200


BAD_NONCES = [
    "short12",  # 7 characters
    "x" * 129,
    "has space-1234",
    "slash/in/nonce",
    "plus+sign+nonce",
    "percent%20nonce",
    "ünïcödé-nonce",
    "nul\x00byte-nonce",
    "newline\nnonce",
    "trailing-newline\n",
    "",
]


async def test_bad_nonce_is_400(client, owner):
    for nonce in BAD_NONCES:
        for send in ("json", "data"):
            body = credentials(owner.user_id, owner.secret, nonce)
            response = await client.post("/api/v1/token", **{send: body})
            assert response.status_code == 400, (nonce, send, response.text)
            metadata = response.json()["metadata"]
            assert metadata["code"] == "validation_error"
            assert [error["field"] for error in metadata["errors"]] == ["nonce"], nonce


async def test_nonce_alphabet_edges_are_accepted(client, owner):
    for nonce in ("12345678", "x" * 128, "Az09._~:-", str(uuid.uuid1()), str(uuid.uuid4())):
        response = await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret, nonce))
        assert response.status_code == 200, (nonce, response.text)


MALFORMED = [
    ("hash", "abc"),
    ("hash", "g" * 64),
    ("hash", "a" * 65),
    ("hash", None),
    ("userId", "abc"),
    ("userId", -1),
    ("userId", True),
    ("userId", 1.5),
    ("userId", str(2**31)),  # beyond any id column: refused, never a database error
    ("userId", 2**70),
    ("userId", None),
    ("nonce", None),
    ("nonce", 12345678),
]


async def test_malformed_fields_are_400(client, owner):
    for field, value in MALFORMED:
        body = credentials(owner.user_id, owner.secret)
        if value is None:
            del body[field]
        else:
            body[field] = value
        response = await client.post("/api/v1/token", json=body)
        assert response.status_code == 400, (field, value, response.text)
        assert field in response.json()["metadata"]["message"], (field, value)


async def test_wrong_hash_and_unknown_user_look_the_same(client, owner):
    nonce = str(uuid.uuid1())
    wrong_hash = await client.post(
        "/api/v1/token", json={"userId": owner.user_id, "nonce": nonce, "hash": sign("not-the-secret", nonce)}
    )
    unknown = await client.post("/api/v1/token", json=credentials("987654", owner.secret, nonce))
    largest = await client.post("/api/v1/token", json=credentials(str(2**31 - 1), owner.secret, nonce))
    assert wrong_hash.status_code == unknown.status_code == largest.status_code == 401
    assert wrong_hash.content == unknown.content == largest.content
    assert wrong_hash.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")


async def test_user_without_a_key_looks_unknown(client, api):
    user = await api.add_user("1", "Member", with_key=False)
    response = await client.post("/api/v1/token", json=credentials(user.user_id, "guess"))
    unknown = await client.post("/api/v1/token", json=credentials("987654", "guess"))
    assert response.status_code == 401
    assert response.content == unknown.content


# -- rate limits ---------------------------------------------------------------------------------

LIMITS = {
    "token_failures_per_user_and_client": 3,
    "token_failures_per_client": 5,
    "token_failures_per_user": 100,
    "token_failure_window_seconds": 300,
}
# A low per-userId ceiling, to watch it act on a distributed attack.
CEILING = {**LIMITS, "token_failures_per_user": 4}
PROXIED = {**LIMITS, "trusted_proxies": [ip_network("10.9.0.0/16"), ip_network("fd00::/8")]}


def client_at(app, address: str) -> httpx.AsyncClient:  # noqa: ANN001
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 4000)), base_url="http://test")


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_an_attacker_exhausts_its_own_tries_but_cannot_lock_out_the_owner(app, owner):
    async with client_at(app, "10.0.0.1") as attacker, client_at(app, "10.0.0.2") as rightful:
        for _ in range(3):
            response = await attacker.post("/api/v1/token", json=credentials(owner.user_id, "wrong"))
            assert response.status_code == 401
        limited = await attacker.post("/api/v1/token", json=credentials(owner.user_id, "wrong"))
        assert limited.status_code == 429, limited.text
        assert limited.json()["metadata"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 300
        # Even the right hash is refused from the attacker's address: guessing stays slow ...
        refused = await attacker.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))
        assert refused.status_code == 429
        # ... while the rightful user, from an address with no failures, gets a token.
        granted = await rightful.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))
        assert granted.status_code == 200, granted.text
        # The attacker's address may still fail for other users (its per-address budget is not spent).
        other = await attacker.post("/api/v1/token", json=credentials("424242", "wrong"))
        assert other.status_code == 401


@pytest.mark.parametrize("settings_overrides", [CEILING])
async def test_the_per_user_ceiling_slows_a_distributed_attack_but_lets_clean_addresses_in(app, owner):
    """Ceiling 4: after four failures from all addresses together, every address that has failed waits,
    a fresh address gets one guess, and an address that never failed still gets in with the right hash."""
    async with client_at(app, "10.1.0.1") as first, client_at(app, "10.1.0.2") as second:
        for _ in range(3):
            assert (await first.post("/api/v1/token", json=credentials(owner.user_id, "x"))).status_code == 401
        assert (await second.post("/api/v1/token", json=credentials(owner.user_id, "x"))).status_code == 401
        # second has failed once (below its pair limit of 3) but the ceiling is reached: it waits now.
        limited = await second.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 300
    async with client_at(app, "10.1.0.3") as fresh:
        assert (await fresh.post("/api/v1/token", json=credentials(owner.user_id, "x"))).status_code == 401
        assert (await fresh.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))).status_code == 429
    async with client_at(app, "10.1.0.4") as rightful:
        assert (await rightful.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))).status_code == 200
    # Other users are not affected by this user's ceiling.
    async with client_at(app, "10.1.0.2") as second:
        assert (await second.post("/api/v1/token", json=credentials("424242", "x"))).status_code == 401


@pytest.mark.parametrize("settings_overrides", [PROXIED])
async def test_behind_a_trusted_proxy_failures_count_against_the_forwarded_address(app, owner):
    async with client_at(app, "10.9.0.1") as proxy:
        attacker = {"X-Forwarded-For": "198.51.100.7"}
        # The client's own claim on the left is ignored: the proxy appended the address it saw.
        rightful = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
        for _ in range(3):
            response = await proxy.post("/api/v1/token", json=credentials(owner.user_id, "x"), headers=attacker)
            assert response.status_code == 401
        limited = await proxy.post("/api/v1/token", json=credentials(owner.user_id, owner.secret), headers=attacker)
        assert limited.status_code == 429
        # Another client behind the same proxy is a different address: it gets in.
        granted = await proxy.post("/api/v1/token", json=credentials(owner.user_id, owner.secret), headers=rightful)
        assert granted.status_code == 200, granted.text


@pytest.mark.parametrize("settings_overrides", [PROXIED])
async def test_forwarded_for_from_an_untrusted_peer_is_ignored(app, owner):
    async with client_at(app, "10.0.0.7") as spoofer:
        for index in range(3):
            forged = {"X-Forwarded-For": f"198.51.100.{index + 1}"}
            response = await spoofer.post("/api/v1/token", json=credentials(owner.user_id, "x"), headers=forged)
            assert response.status_code == 401
        # A new made-up address does not buy new tries: the failures were counted against the peer.
        forged = {"X-Forwarded-For": "198.51.100.200"}
        limited = await spoofer.post("/api/v1/token", json=credentials(owner.user_id, owner.secret), headers=forged)
        assert limited.status_code == 429


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_failures_per_client_address_are_limited(app, owner):
    async with client_at(app, "10.0.0.3") as noisy, client_at(app, "10.0.0.4") as quiet:
        # Five different (unknown) users, so only the per-address limit can trip.
        for user_id in range(1000, 1005):
            assert (await noisy.post("/api/v1/token", json=credentials(user_id, "x"))).status_code == 401
        limited = await noisy.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert (await quiet.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))).status_code == 200


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_successes_and_bad_requests_do_not_count(app, owner):
    async with client_at(app, "10.0.0.5") as http:
        for _ in range(6):
            assert (await http.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))).status_code == 200
            assert (await http.post("/api/v1/token", json={"userId": owner.user_id})).status_code == 400


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_reused_nonces_count_as_failures(app, owner):
    async with client_at(app, "10.0.0.6") as http:
        nonce = str(uuid.uuid1())
        first = await http.post("/api/v1/token", json=credentials(owner.user_id, owner.secret, nonce))
        assert first.status_code == 200
        for _ in range(3):
            replay = await http.post("/api/v1/token", json=credentials(owner.user_id, owner.secret, nonce))
            assert replay.status_code == 401
        assert (await http.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))).status_code == 429


# -- secrets stay out of logs --------------------------------------------------------------------


async def test_secrets_and_tokens_never_reach_the_log(client, api, caplog):
    # DEBUG everywhere, SQL statement logging included (ihub keeps it at WARNING: see ihub.logs.QUIET_LOGGERS),
    # so that SQLAlchemy logs every statement with its parameters.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    user = await api.add_user("1", "Owner")
    nonce = str(uuid.uuid1())
    issued = await client.post("/api/v1/token", json=credentials(user.user_id, user.secret, nonce))
    token = issued.json()["tokens"][0]["token"]
    await client.post("/api/v1/token", json=credentials(user.user_id, user.secret, nonce))  # a refused replay
    new_secret = await api.new_key(user.user_id)
    await client.post("/api/v1/token", data=credentials(user.user_id, new_secret))
    text = caplog.text + "".join(repr(record.args) for record in caplog.records)
    assert "api_keys" in text, "expected SQL statements in the captured log; is DEBUG capture working?"
    for secret in (user.secret, new_secret, token, urllib.parse.quote(user.secret)):
        assert secret not in text


async def test_one_nonce_sent_many_times_at_once_buys_one_token(client, owner):
    import anyio

    body = credentials(owner.user_id, owner.secret)
    statuses: list[int] = []

    async def send() -> None:
        statuses.append((await client.post("/api/v1/token", json=body)).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(send)
    assert sorted(statuses) == [200, 401, 401, 401, 401, 401]
