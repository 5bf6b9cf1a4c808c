"""Schedule triggers: one run per cron tick, never twice for the same tick, none before the flow existed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flowkit import jira_definition
from sqlalchemy import select

from ihub.db.base import utcnow
from ihub.executors import dispatch
from ihub.flows.models import Flow
from ihub.flows.schedule import schedule_tick

pytestmark = pytest.mark.anyio

SCHEDULED = {
    "key": "every-5",
    "trigger": {"type": "schedule", "cron": "*/5 * * * *"},
    "steps": [{"id": "out", "type": "respond", "body": {"at": "{{ trigger.scheduledFor }}"}}],
}
MANUAL = {"key": "manual", "trigger": "manual", "steps": [{"id": "m", "type": "map", "set": {"a": 1}}]}


async def test_schedule_tick_creates_one_run_per_tick(kit) -> None:
    project = await kit.project(jira_definition([SCHEDULED, MANUAL], slot_type="http"))
    sessions = kit.app.state.context.sessions
    async with sessions() as session:
        flow = await session.scalar(select(Flow).where(Flow.id == int(kit.flow_id(project, "every-5"))))
    base = flow.created_at.replace(second=0, microsecond=0) + timedelta(minutes=10 - flow.created_at.minute % 5)

    assert await schedule_tick(sessions, base - timedelta(minutes=20)) == []  # before the flow existed
    first = await schedule_tick(sessions, base + timedelta(seconds=30))
    assert len(first) == 1
    assert await schedule_tick(sessions, base + timedelta(minutes=2)) == []  # same tick again: deduplicated
    second = await schedule_tick(sessions, base + timedelta(minutes=5, seconds=1))
    assert len(second) == 1 and second != first
    assert len(await schedule_tick(sessions, base + timedelta(hours=3, minutes=1))) == 1  # late: the latest tick only
    assert await schedule_tick(sessions, base + timedelta(hours=3, minutes=2)) == []

    await dispatch(kit.app.state.context, first[0])
    run = await kit.wait(str(first[0]))
    assert run["status"] == "succeeded"
    assert run["triggerType"] == "schedule"
    assert run["result"]["body"]["at"] == base.isoformat()
    assert run["flowKey"] == "every-5"
    assert utcnow() > flow.created_at


async def test_schedule_tick_reads_without_the_write_connection(kit) -> None:
    # The tick runs as the hub starts; on SQLite a write session holds the one write connection and the writer
    # gate even to read, which made the first requests' writes wait (a 503 under a short lock timeout).
    project = await kit.project(jira_definition([SCHEDULED], slot_type="http"))
    context = kit.app.state.context
    async with context.sessions() as session:
        flow = await session.scalar(select(Flow).where(Flow.id == int(kit.flow_id(project, "every-5"))))
    base = flow.created_at.replace(second=0, microsecond=0) + timedelta(minutes=10 - flow.created_at.minute % 5)
    opened: list[str] = []

    def writer() -> object:
        opened.append("write session")
        return context.sessions()

    assert await schedule_tick(writer, base - timedelta(minutes=20), readers=context.readers) == []
    assert opened == []  # nothing due: the scan alone never took the writer
    assert len(await schedule_tick(writer, base + timedelta(seconds=30), readers=context.readers)) == 1
    assert opened == ["write session"]  # a due tick's run is the only write
