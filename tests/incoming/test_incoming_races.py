"""Concurrent token requests: a jti is single-use even when the same assertion arrives twice at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from incoming_support import Incoming, Trigger
from sqlalchemy import func, select

from ihub.incoming.models import TriggerClient, UsedAssertion
from ihub.incoming.single_use import SingleUse, spend_of

pytestmark = pytest.mark.anyio


async def test_racing_requests_with_one_jti_get_exactly_one_token(incoming: Incoming, trigger: Trigger) -> None:
    # Runs on PostgreSQL (separate connections, the unique constraint decides) and on SQLite (BEGIN IMMEDIATE).
    for attempt in range(3):
        assertion = trigger.assertion(jti=f"race-{attempt}")
        responses = await asyncio.gather(*(incoming.token(assertion) for _ in range(6)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 400, 400, 400, 400, 400], [r.text for r in responses]
        assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)


async def test_two_nodes_spending_the_same_jtis_accept_each_once(app: Any, trigger: Trigger) -> None:
    """Two API nodes (two group committers on one database) race on the same jtis: each is accepted exactly
    once. On PostgreSQL one node's batch hits the other's unique rows and retries grant by grant."""
    sessions = app.state.context.sessions
    async with sessions() as session:
        client_pk = await session.scalar(select(TriggerClient.id).where(TriggerClient.client_id == trigger.iss))
    assert client_pk is not None
    nodes = [SingleUse(sessions), SingleUse(sessions)]
    spends = [spend_of(client_pk, f"jti-{n}", time.time() + 600, 60) for n in range(20)]
    answers = await asyncio.gather(*(node.spend(spend) for spend in spends for node in nodes))
    pairs = [answers[i : i + 2] for i in range(0, len(answers), 2)]
    assert all(sorted(pair) == [False, True] for pair in pairs), pairs
    async with sessions() as session:
        stored = await session.scalar(select(func.count()).select_from(UsedAssertion))
    assert stored == 20
