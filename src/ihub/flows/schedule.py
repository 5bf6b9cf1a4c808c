"""Schedule triggers: create a run for every cron tick of every active schedule-triggered flow.

Idempotent across processes and restarts: a tick's run carries `dedupe_key = schedule:<flow id>:<tick time>`,
which is unique in the database, so two schedulers (or a restarted one) never create the same tick twice.
After downtime only the most recent missed tick runs (no backfill storm).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ihub.db.base import utcnow
from ihub.flows.models import Flow
from ihub.flows.service import compiled_flow
from ihub.flows.triggers import ScheduleTrigger
from ihub.projects.models import Project
from ihub.runs.service import create_run

# A tick older than this is not run any more (the hub was down); the next one will be.
MAX_LATENESS = timedelta(minutes=10)


async def schedule_tick(sessions: Any, now: datetime | None = None, *, readers: Any = None) -> list[int]:
    """Create the runs that are due now; return their ids (the caller submits them).

    The scan of active flows goes through `readers` when given: on SQLite a write session takes the one write
    connection and the writer gate (BEGIN IMMEDIATE) even to read, and this tick runs as the hub starts, beside
    the first requests' writes. Only a due tick's run is written."""
    now = now or utcnow()
    due: list[tuple[Flow, int, ScheduleTrigger]] = []
    async with (readers or sessions)() as session:
        rows = (
            await session.execute(
                select(Flow, Project.template_id, Project.template_version)
                .join(Project, Project.id == Flow.project_id)
                .where(Flow.active.is_(True))
            )
        ).all()
        for flow, template_id, version in rows:
            # Each project's pinned version, compiled once per process (see ihub.flows.service).
            _exists, spec = await compiled_flow(session, template_id, version, flow.key)
            if spec is not None and isinstance(spec.trigger, ScheduleTrigger):
                due.append((flow, version, spec.trigger))
    created: list[int] = []
    for flow, version, trigger in due:
        tick = trigger.latest_tick(now)
        if tick < flow.created_at or now - tick > MAX_LATENESS:
            continue
        async with sessions() as session:
            try:
                run = await create_run(
                    session,
                    flow=flow,
                    trigger_type="schedule",
                    trigger=ScheduleTrigger.payload(tick),
                    flow_version=version,
                )
                run.dedupe_key = f"schedule:{flow.id}:{tick.isoformat()}"
                await session.commit()
                created.append(run.id)
            except IntegrityError:
                await session.rollback()
    return created
