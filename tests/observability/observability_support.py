"""Helpers for the observability tests: a project of known flows, runs driven to their end, a webhook token."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import jwt


def definition(target: str) -> dict[str, Any]:
    fine = {
        "key": "fine",
        "trigger": "manual",
        "steps": [
            {"id": "call", "type": "http", "method": "GET", "url": target + "/ok"},
            {"id": "out", "type": "respond", "body": "ok"},
        ],
    }
    broken = {
        "key": "broken",
        "trigger": "manual",
        "steps": [{"id": "call", "type": "http", "method": "GET", "url": target + "/broken"}],
    }
    hook = {"key": "hook", "trigger": {"type": "jwt"}, "steps": [{"id": "out", "type": "respond", "body": "ok"}]}
    pair = {
        "key": "pair",
        "trigger": "manual",
        "steps": [
            {"id": "note", "type": "map", "set": {"n": "{{ 1 }}"}},
            {"id": "out", "type": "respond", "body": "ok"},
        ],
    }
    return {"connections": [], "flows": [fine, broken, hook, pair]}


async def make_project(client: httpx.AsyncClient, auth: dict[str, str], target: str) -> dict[str, str]:
    body = {"name": f"t-{uuid.uuid4().hex[:8]}", "description": "", "definition": definition(target)}
    response = await client.post("/api/v1/template/org/1", json=body, headers=auth)
    assert response.status_code == 200, response.text
    body = {"name": f"p-{uuid.uuid4().hex[:8]}", "templateId": response.json()["templates"][0]["id"]}
    response = await client.post("/api/v1/project/org/1", json=body, headers=auth)
    assert response.status_code == 200, response.text
    return {flow["key"]: flow["id"] for flow in response.json()["projects"][0]["flows"]}


async def run_to_end(client: httpx.AsyncClient, auth: dict[str, str], flow_id: str) -> tuple[str, str]:
    response = await client.post(f"/api/v1/flow/{flow_id}/run", json={}, headers=auth)
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]
    for _ in range(600):
        run = (await client.get(f"/api/v1/run/{run_id}", headers=auth)).json()["runs"][0]
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run_id, run["status"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {run}")


async def access_token(client: httpx.AsyncClient, auth: dict[str, str], flow_id: str) -> str:
    response = await client.post(f"/api/v1/flow/{flow_id}/trigger/jwt", json={"generateKey": True}, headers=auth)
    assert response.status_code == 200, response.text
    trigger = response.json()["triggers"][0]
    now = int(time.time())
    claims = {"iss": trigger["iss"], "sub": trigger["sub"], "aud": trigger["aud"], "iat": now, "exp": now + 600}
    assertion = jwt.encode(claims, trigger["privateKey"], algorithm="RS256", headers={"typ": "JWT"})
    grant = {"grant_type": "urn:ihub:jwt:bearer", "assertion": assertion}
    response = await client.post("/prod/incoming/token", json=grant)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token
