"""Helpers shared by test folders (importable anywhere: the root conftest puts tests/ on sys.path)."""

from __future__ import annotations

import hashlib
import uuid

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
