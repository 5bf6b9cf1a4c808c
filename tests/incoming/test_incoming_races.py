"""Concurrent token requests: a jti is single-use even when the same assertion arrives twice at once."""

from __future__ import annotations

import asyncio

import pytest
from incoming_support import Incoming, Trigger

pytestmark = pytest.mark.anyio


async def test_racing_requests_with_one_jti_get_exactly_one_token(incoming: Incoming, trigger: Trigger) -> None:
    # Runs on PostgreSQL (separate connections, the unique constraint decides) and on SQLite (BEGIN IMMEDIATE).
    for attempt in range(3):
        assertion = trigger.assertion(jti=f"race-{attempt}")
        responses = await asyncio.gather(*(incoming.token(assertion) for _ in range(6)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 400, 400, 400, 400, 400], [r.text for r in responses]
        assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)
