"""Helpers shared by test folders (importable anywhere: the root conftest puts tests/ on sys.path)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import httpx


async def login_new_user(client: httpx.AsyncClient, admin: dict[str, str], org_id: str, role: str) -> dict[str, str]:
    """Create a user of `role` in `org_id` (as `admin`), give it a key, exchange it for a token; return the
    user's Authorization header."""
    email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    response = await client.post(
        f"/api/v1/user/org/{org_id}", json=[{"name": role, "email": email, "role": role}], headers=admin
    )
    assert response.status_code == 200, response.text
    user_id = response.json()["users"][0]["id"]
    response = await client.post(f"/api/v1/user/{user_id}/key", headers=admin)
    assert response.status_code == 200, response.text
    secret = response.json()["keys"][0]["secret"]
    nonce = uuid.uuid4().hex
    digest = hashlib.sha256((secret + nonce).encode()).hexdigest()
    response = await client.post("/api/v1/token", json={"userId": user_id, "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text
    return {"Authorization": response.json()["tokens"][0]["token"]}


@dataclass
class User:
    user_id: str
    secret: str
    email: str = ""


@dataclass
class Api:
    """Drives the provisioning API as a client would; asserts only that set-up calls succeed."""

    client: httpx.AsyncClient
    auth: dict[str, str]

    async def add_users(self, org_id: str, *roles: str) -> list[User]:
        entries = [
            {"name": f"{role} {index}", "email": f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com", "role": role}
            for index, role in enumerate(roles)
        ]
        response = await self.client.post(f"/api/v1/user/org/{org_id}", json=entries, headers=self.auth)
        assert response.status_code == 200, response.text
        return [User(u["id"], "", u["email"]) for u in response.json()["users"]]

    async def add_user(self, org_id: str, role: str, *, with_key: bool = True) -> User:
        [user] = await self.add_users(org_id, role)
        if with_key:
            user.secret = await self.new_key(user.user_id)
        return user

    async def new_key(self, user_id: str) -> str:
        response = await self.client.post(f"/api/v1/user/{user_id}/key", headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["keys"][0]["secret"]

    async def add_org(self, name: str, parent_id: str) -> str:
        response = await self.client.post("/api/v1/org", json={"name": name, "parentId": parent_id}, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["organizations"][0]["id"]

    async def headers_for(self, user: User) -> dict[str, str]:
        nonce = str(uuid.uuid1())
        digest = hashlib.sha256((user.secret + nonce).encode()).hexdigest()
        response = await self.client.post(
            "/api/v1/token", json={"userId": user.user_id, "nonce": nonce, "hash": digest}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": response.json()["tokens"][0]["token"]}

    async def org_ids(self, headers: dict[str, str]) -> set[str]:
        response = await self.client.get("/api/v1/org", headers=headers)
        assert response.status_code == 200, response.text
        return {org["id"] for org in response.json()["organizations"]}
