"""Concurrent requests that race for the same name or email: one wins, the others get 409, never a 500."""

from __future__ import annotations

import anyio
import pytest

pytestmark = pytest.mark.anyio


async def gather(count: int, send) -> list:  # noqa: ANN001
    results: list = [None] * count

    async def one(index: int) -> None:
        results[index] = await send()

    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(one, index)
    return results


async def test_same_org_name_at_once(client, auth):
    responses = await gather(6, lambda: client.post("/api/v1/org", json={"name": "Twin"}, headers=auth))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409, 409, 409], [r.text for r in responses]
    orgs = (await client.get("/api/v1/org", headers=auth)).json()["organizations"]
    assert [o["name"] for o in orgs].count("Twin") == 1


async def test_same_email_at_once(client, auth):
    user = {"name": "Racer", "email": "racer@example.com", "role": "Member"}
    responses = await gather(6, lambda: client.post("/api/v1/user/org/1", json=[user], headers=auth))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409, 409, 409], [r.text for r in responses]
    users = (await client.get("/api/v1/user/org/1", headers=auth)).json()["users"]
    assert [u["email"] for u in users].count("racer@example.com") == 1
