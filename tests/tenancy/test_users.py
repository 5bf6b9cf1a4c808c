"""/api/v1/user: all-or-nothing bulk create, roles, and single-user reads and changes."""

from __future__ import annotations

import pytest

from db_snapshot import NothingWritten

pytestmark = pytest.mark.anyio

SEED_USERS = [
    {"name": "Steve Owner", "email": "steve@owner.com", "role": "Owner"},
    {"name": "Sally Member", "email": "sally@member.com", "role": "Member"},
    {"name": "Jack Admin", "email": "jack@admin.com", "role": "Member"},
]


async def emails_in(client, headers, org_id: str) -> set[str]:  # noqa: ANN001
    response = await client.get(f"/api/v1/user/org/{org_id}", headers=headers)
    assert response.status_code == 200, response.text
    return {user["email"] for user in response.json()["users"]}


async def test_bulk_create_as_the_seed_sends_it(client, api):
    org = await api.add_org("Brand Spanking New Org", "1")
    response = await client.post(f"/api/v1/user/org/{org}", json=SEED_USERS, headers=api.auth)
    assert response.status_code == 200, response.text
    users = response.json()["users"]
    assert [u["email"] for u in users] == [u["email"] for u in SEED_USERS]
    assert [u["role"] for u in users] == ["Owner", "Member", "Member"]
    for user in users:
        assert set(user) == {"id", "name", "email", "role", "orgId", "hasKey", "createdAt"}
        assert user["orgId"] == org and user["hasKey"] is False and user["id"].isdigit()
    assert await emails_in(client, api.auth, org) == {u["email"] for u in SEED_USERS}


async def test_roles_are_case_insensitive(client, auth):
    entries = [
        {"name": "a", "email": "a@example.com", "role": "owner"},
        {"name": "b", "email": "b@example.com", "role": "ADMIN"},
        {"name": "c", "email": "c@example.com", "role": " mEmBeR "},
    ]
    response = await client.post("/api/v1/user/org/1", json=entries, headers=auth)
    assert response.status_code == 200, response.text
    assert [u["role"] for u in response.json()["users"]] == ["Owner", "Admin", "Member"]


@pytest.mark.parametrize("encoding", ["json", "form"])
async def test_one_object_is_accepted(client, auth, encoding):
    user = {"name": "Solo", "email": "Solo@Example.com", "role": "member"}
    if encoding == "json":
        response = await client.post("/api/v1/user/org/1", json=user, headers=auth)
    else:
        response = await client.post("/api/v1/user/org/1", data=user, headers=auth)
    assert response.status_code == 200, response.text
    [created] = response.json()["users"]
    assert (created["name"], created["email"], created["role"]) == ("Solo", "solo@example.com", "Member")


BAD_ENTRIES = [
    ({"email": "not-an-email"}, "users[1].email"),
    ({"role": "Superuser"}, "users[1].role"),
    ({"role": None}, "users[1].role"),
    ({"name": ""}, "users[1].name"),
    ({"name": "x" * 201}, "users[1].name"),
    ({"name": "nul\u0000"}, "users[1].name"),
    ({"email": "nul\u0000@example.com"}, "users[1].email"),
]


async def test_one_bad_entry_refuses_all(client, auth):
    for bad, field in BAD_ENTRIES:
        entries = [
            {"name": "Good", "email": "good@example.com", "role": "Member"},
            {"name": "Bad", "email": "bad@example.com", "role": "Member", **bad},
            {"name": "Also good", "email": "also@example.com", "role": "Admin"},
        ]
        response = await client.post("/api/v1/user/org/1", json=entries, headers=auth)
        assert response.status_code == 400, (bad, response.text)
        metadata = response.json()["metadata"]
        assert metadata["message"].startswith(field), bad
        assert [error["field"] for error in metadata["errors"]] == [field], bad
        assert await emails_in(client, auth, "1") == {"owner@ihub.local"}


async def test_missing_fields_are_named(client, auth):
    response = await client.post("/api/v1/user/org/1", json=[{"name": "x", "email": "x@example.com"}, {}], headers=auth)
    assert response.status_code == 400
    fields = {error["field"] for error in response.json()["metadata"]["errors"]}
    assert fields == {"users[0].role", "users[1].name", "users[1].email", "users[1].role"}


async def test_bodies_that_are_not_users(client, auth):
    for body in ([], "a string", 42, [1, 2], None, [[]]):
        response = await client.post("/api/v1/user/org/1", json=body, headers=auth)
        assert response.status_code == 400, (body, response.text)
    assert await emails_in(client, auth, "1") == {"owner@ihub.local"}


async def test_duplicate_email_in_one_request(client, auth):
    entries = [
        {"name": "One", "email": "dup@example.com", "role": "Member"},
        {"name": "Two", "email": "DUP@example.COM", "role": "Member"},
    ]
    response = await client.post("/api/v1/user/org/1", json=entries, headers=auth)
    assert response.status_code == 400, response.text
    assert response.json()["metadata"]["message"].startswith("users[1].email")
    assert await emails_in(client, auth, "1") == {"owner@ihub.local"}


async def test_existing_email_is_a_conflict(client, api):
    other_org = await api.add_org("Other", "1")
    await client.post(
        f"/api/v1/user/org/{other_org}",
        json={"name": "x", "email": "taken@example.com", "role": "Member"},
        headers=api.auth,
    )
    entries = [
        {"name": "New", "email": "new@example.com", "role": "Member"},
        {"name": "Taken", "email": "Taken@Example.com", "role": "Member"},
    ]
    response = await client.post("/api/v1/user/org/1", json=entries, headers=api.auth)
    assert response.status_code == 409, response.text
    assert response.json()["metadata"]["message"].startswith("users[1].email")
    assert await emails_in(client, api.auth, "1") == {"owner@ihub.local"}


async def test_unknown_org_is_404(client, auth):
    user = {"name": "x", "email": "x@example.com", "role": "Member"}
    for org in ("424242", "nope"):
        assert (await client.post(f"/api/v1/user/org/{org}", json=user, headers=auth)).status_code == 404
        assert (await client.get(f"/api/v1/user/org/{org}", headers=auth)).status_code == 404


async def test_list_shows_the_orgs_own_users_only(client, api):
    a = await api.add_org("A", "1")
    a1 = await api.add_org("A1", a)
    [in_a] = await api.add_users(a, "Member")
    [in_a1] = await api.add_users(a1, "Member")
    assert await emails_in(client, api.auth, a) == {in_a.email}
    assert await emails_in(client, api.auth, a1) == {in_a1.email}


async def test_get_put_delete(client, api):
    [user] = await api.add_users("1", "Member")
    got = await client.get(f"/api/v1/user/{user.user_id}", headers=api.auth)
    assert got.status_code == 200
    assert got.json()["users"][0]["email"] == user.email

    changed = await client.put(
        f"/api/v1/user/{user.user_id}",
        json={"name": "Renamed", "email": "Renamed@Example.com", "role": "admin"},
        headers=api.auth,
    )
    assert changed.status_code == 200, changed.text
    entry = changed.json()["users"][0]
    assert (entry["name"], entry["email"], entry["role"]) == ("Renamed", "renamed@example.com", "Admin")
    form = await client.put(f"/api/v1/user/{user.user_id}", data={"name": "Form"}, headers=api.auth)
    assert form.status_code == 200 and form.json()["users"][0]["name"] == "Form"
    assert (await client.get(f"/api/v1/user/{user.user_id}", headers=api.auth)).json()["users"][0]["role"] == "Admin"

    deleted = await client.delete(f"/api/v1/user/{user.user_id}", headers=api.auth)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["users"][0]["id"] == user.user_id
    assert (await client.get(f"/api/v1/user/{user.user_id}", headers=api.auth)).status_code == 404
    assert (await client.delete(f"/api/v1/user/{user.user_id}", headers=api.auth)).status_code == 404


async def test_put_validation_and_conflicts(client, api):
    first, second = await api.add_users("1", "Member", "Member")
    taken = await client.put(f"/api/v1/user/{first.user_id}", json={"email": second.email.upper()}, headers=api.auth)
    assert taken.status_code == 409
    # Found before the write (the database's unique index would answer too, but without naming the email).
    assert taken.json()["metadata"]["message"] == f"a user with email {second.email.lower()} already exists"
    assert taken.json()["metadata"]["code"] == "email_taken"
    for body, field in (({"email": "nope"}, "email"), ({"role": "King"}, "role"), ({"name": ""}, "name")):
        response = await client.put(f"/api/v1/user/{first.user_id}", json=body, headers=api.auth)
        assert response.status_code == 400, response.text
        assert [e["field"] for e in response.json()["metadata"]["errors"]] == [field]
        if field == "role":
            assert "role must be one of Owner, Admin, Member" in response.text
    # Its own email again is not a conflict.
    same = await client.put(f"/api/v1/user/{first.user_id}", json={"email": first.email}, headers=api.auth)
    assert same.status_code == 200


async def test_nobody_deletes_or_demotes_themselves(client, api, owner, app):
    async with NothingWritten(app):
        response = await client.delete(f"/api/v1/user/{owner.user_id}", headers=api.auth)
        assert response.status_code == 403
        assert response.json()["metadata"]["message"] == "you cannot delete yourself"
        response = await client.put(f"/api/v1/user/{owner.user_id}", json={"role": "Member"}, headers=api.auth)
        assert response.status_code == 403
        assert response.json()["metadata"]["message"] == "you cannot change your own role"
    assert (await client.get(f"/api/v1/user/{owner.user_id}", headers=api.auth)).json()["users"][0]["role"] == "Owner"
    # Renaming oneself is fine.
    assert (await client.put(f"/api/v1/user/{owner.user_id}", json={"name": "Me"}, headers=api.auth)).status_code == 200


async def test_admin_manages_members_and_admins_but_not_owners(client, api, app):
    admin = await api.add_user("1", "Admin")
    headers = await api.headers_for(admin)
    member, other_admin, an_owner = await api.add_users("1", "Member", "Admin", "Owner")
    assert (
        await client.put(f"/api/v1/user/{member.user_id}", json={"role": "Admin"}, headers=headers)
    ).status_code == 200
    async with NothingWritten(app):
        promote = await client.put(f"/api/v1/user/{member.user_id}", json={"role": "Owner"}, headers=headers)
        assert promote.status_code == 403
        assert promote.json()["metadata"]["message"] == "only an Owner may make a user an Owner"
    assert (await client.get(f"/api/v1/user/{member.user_id}", headers=api.auth)).json()["users"][0]["role"] == "Admin"
    assert (await client.delete(f"/api/v1/user/{other_admin.user_id}", headers=headers)).status_code == 200
    assert (await client.get(f"/api/v1/user/{other_admin.user_id}", headers=api.auth)).status_code == 404
    async with NothingWritten(app):
        refused = await client.delete(f"/api/v1/user/{an_owner.user_id}", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["metadata"]["message"] == "only an Owner may delete an Owner"
        create_owner = await client.post(
            "/api/v1/user/org/1",
            json=[
                {"name": "m", "email": "m@example.com", "role": "Member"},
                {"name": "o", "email": "o@example.com", "role": "Owner"},
            ],
            headers=headers,
        )
        assert create_owner.status_code == 403
    assert create_owner.json()["metadata"]["message"].startswith("users[1].role")
    assert "m@example.com" not in await emails_in(client, api.auth, "1")


async def test_email_taken_between_check_and_commit_is_still_a_conflict(client, api, monkeypatch):
    """The unique index has the last word: as if a concurrent request took the email after the check."""
    first, second = await api.add_users("1", "Member", "Member")

    async def nothing_taken(session, emails):  # noqa: ANN001, ANN202
        return set()

    monkeypatch.setattr("ihub.tenancy.service._emails_taken", nothing_taken)
    taken = await client.put(f"/api/v1/user/{first.user_id}", json={"email": second.email}, headers=api.auth)
    assert taken.status_code == 409, taken.text
    assert taken.json()["metadata"]["message"] == "a user with that email already exists"
    response = await client.get(f"/api/v1/user/{first.user_id}", headers=api.auth)
    assert response.json()["users"][0]["email"] == first.email
