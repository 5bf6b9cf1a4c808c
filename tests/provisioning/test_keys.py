"""POST /api/v1/user/{id}/key: Owners only, inside their subtree, the secret shown once."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from db_snapshot import NothingWritten

pytestmark = pytest.mark.anyio


def credentials(user_id: str, secret: str) -> dict[str, str]:
    nonce = str(uuid.uuid1())
    return {"userId": user_id, "nonce": nonce, "hash": hashlib.sha256((secret + nonce).encode()).hexdigest()}


async def token_for(client, user) -> dict[str, str]:  # noqa: ANN001
    response = await client.post("/api/v1/token", json=credentials(user.user_id, user.secret))
    assert response.status_code == 200, response.text
    return {"Authorization": "Bearer " + response.json()["tokens"][0]["token"]}


async def test_owner_generates_own_key_once(client, owner, auth):
    response = await client.post(f"/api/v1/user/{owner.user_id}/key", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    [key] = response.json()["keys"]
    assert set(key) == {"userId", "secret", "createdAt"}
    assert key["userId"] == owner.user_id
    assert len(key["secret"]) >= 32 and key["secret"] != owner.secret
    # The new secret works, the old one does not, and the caller's token died with the old key.
    assert (await client.post("/api/v1/token", json=credentials(owner.user_id, key["secret"]))).status_code == 200
    assert (await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))).status_code == 401
    assert (await client.get("/api/v1/org", headers=auth)).status_code == 401


async def test_secret_is_never_shown_again(client, api):
    user = await api.add_user("1", "Member", with_key=False)
    before = (await client.get(f"/api/v1/user/{user.user_id}", headers=api.auth)).json()["users"][0]
    assert before["hasKey"] is False
    secret = await api.new_key(user.user_id)
    for path in (f"/api/v1/user/{user.user_id}", "/api/v1/user/org/1"):
        response = await client.get(path, headers=api.auth)
        assert response.status_code == 200
        assert secret not in response.text
        assert "secret" not in response.text.lower()
        [entry] = [u for u in response.json()["users"] if u["id"] == user.user_id]
        assert entry["hasKey"] is True


async def test_owner_may_generate_for_users_in_subtree_only(client, api):
    a = await api.add_org("A", "1")
    a1 = await api.add_org("A1", a)
    b = await api.add_org("B", "1")
    owner_a = await api.add_user(a, "Owner")
    in_a = await api.add_user(a, "Owner", with_key=False)
    in_a1 = await api.add_user(a1, "Member", with_key=False)
    in_b = await api.add_user(b, "Member", with_key=False)
    headers = await token_for(client, owner_a)
    for target in (in_a, in_a1):
        response = await client.post(f"/api/v1/user/{target.user_id}/key", headers=headers)
        assert response.status_code == 200, response.text
        secret = response.json()["keys"][0]["secret"]
        assert (await client.post("/api/v1/token", json=credentials(target.user_id, secret))).status_code == 200
    for target_id in (in_b.user_id, "1", "999999", "abc", "0"):
        response = await client.post(f"/api/v1/user/{target_id}/key", headers=headers)
        assert response.status_code == 404, (target_id, response.text)
        assert response.json()["metadata"]["code"] == "not_found"
    # The root Owner sees everything.
    assert (await client.post(f"/api/v1/user/{in_b.user_id}/key", headers=api.auth)).status_code == 200


@pytest.mark.parametrize("role", ["Admin", "Member"])
async def test_admins_and_members_may_not_generate_keys(client, api, app, role):
    caller = await api.add_user("1", role)
    member = await api.add_user("1", "Member", with_key=False)
    headers = await token_for(client, caller)
    for target in (caller, member):
        async with NothingWritten(app):
            response = await client.post(f"/api/v1/user/{target.user_id}/key", headers=headers)
        assert response.status_code == 403, response.text
        assert "Owner" in response.json()["metadata"]["message"]
    # Nothing changed: the caller's own secret still works.
    assert (await client.post("/api/v1/token", json=credentials(caller.user_id, caller.secret))).status_code == 200


async def test_key_generation_needs_a_token(client, owner):
    response = await client.post(f"/api/v1/user/{owner.user_id}/key")
    assert response.status_code == 401
    assert (await client.post("/api/v1/token", json=credentials(owner.user_id, owner.secret))).status_code == 200
