"""Creating and reading runs. The engine (ihub.flows) executes them; executors carry only run ids."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ihub.db.base import utcnow
from ihub.flows.models import Flow
from ihub.runs.models import Run


async def create_run(
    session: AsyncSession,
    *,
    flow: Flow,
    trigger_type: str,
    trigger: dict[str, Any],
    flow_version: int = 1,
    replay_of: int | None = None,
) -> Run:
    """Add a queued run (the caller commits, then dispatches the id to the executor)."""
    run = Run(
        project_id=flow.project_id,
        flow_id=flow.id,
        flow_version=flow_version,
        status="queued",
        trigger_type=trigger_type,
        trigger={"receivedAt": utcnow().isoformat(), **trigger},
        replay_of=replay_of,
        next_attempt_at=utcnow(),
    )
    session.add(run)
    await session.flush()
    return run
