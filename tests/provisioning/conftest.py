"""Fixtures for the token exchange and key tests: settings overrides and an API helper."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ihub.config import Settings


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override with `@pytest.mark.parametrize("settings_overrides", [{...}])` to change settings for a test."""
    return {}


@pytest.fixture
def settings(settings: Settings, settings_overrides: dict[str, Any]) -> Settings:
    return settings.model_copy(update=settings_overrides) if settings_overrides else settings


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

    async def add_user(self, org_id: str, role: str, *, with_key: bool = True) -> User:
        email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        response = await self.client.post(
            f"/api/v1/user/org/{org_id}", json=[{"name": role, "email": email, "role": role}], headers=self.auth
        )
        assert response.status_code == 200, response.text
        user_id = response.json()["users"][0]["id"]
        secret = await self.new_key(user_id) if with_key else ""
        return User(user_id, secret, email)

    async def new_key(self, user_id: str) -> str:
        response = await self.client.post(f"/api/v1/user/{user_id}/key", headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["keys"][0]["secret"]

    async def add_org(self, name: str, parent_id: str) -> str:
        response = await self.client.post("/api/v1/org", json={"name": name, "parentId": parent_id}, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["organizations"][0]["id"]


@pytest.fixture
def api(client: httpx.AsyncClient, auth: dict[str, str]) -> Api:
    return Api(client, auth)
