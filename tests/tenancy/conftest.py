"""Fixtures for organization, user and permission tests: an API helper that sets up trees and callers."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import httpx
import pytest


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
            response = await self.client.post(f"/api/v1/user/{user.user_id}/key", headers=self.auth)
            assert response.status_code == 200, response.text
            user.secret = response.json()["keys"][0]["secret"]
        return user

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


@pytest.fixture
def api(client: httpx.AsyncClient, auth: dict[str, str]) -> Api:
    return Api(client, auth)
