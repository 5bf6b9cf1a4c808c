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
from ihub.flows.service import flow_spec
from ihub.flows.triggers import ScheduleTrigger
from ihub.projects.models import Project
from ihub.runs.service import create_run
from ihub.templates.models import Template

# A tick older than this is not run any more (the hub was down); the next one will be.
MAX_LATENESS = timedelta(minutes=10)


async def schedule_tick(sessions: Any, now: datetime | None = None) -> list[int]:
    """Create the runs that are due now; return their ids (the caller submits them)."""
    now = now or utcnow()
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Flow, Template.definition, Template.version)
                .join(Project, Project.id == Flow.project_id)
                .join(Template, Template.id == Project.template_id)
                .where(Flow.active.is_(True))
            )
        ).all()
    created: list[int] = []
    for flow, definition, version in rows:
        raw = [f for f in (definition or {}).get("flows") or [] if isinstance(f, dict) and f.get("key") == flow.key]
        # Most flows are not scheduled: look at the stored trigger before compiling the flow.
        if not raw or not isinstance(raw[0].get("trigger"), dict) or raw[0]["trigger"].get("type") != "schedule":
            continue
        spec = flow_spec(definition, flow.key)
        if spec is None or not isinstance(spec.trigger, ScheduleTrigger):
            continue
        tick = spec.trigger.latest_tick(now)
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
