"""The hub's execution at a glance, for an Owner of the root organization (the console's System page).

Read-only: the executor this process runs, its worker processes, who holds leases on running runs, how many runs
wait in the queue, and which runs are stuck past their lease (their worker died or hangs; the next claim after the
expiry takes them over, see `ihub.runs.lifecycle`).

Who may see it: only an Owner of the root organization. Every other signed-in person gets 403, as the API answers
any action a role does not allow (tenancy/permissions.py); the page reveals nothing of any organization's data,
but its numbers span every tenant, so an Owner of a sub-organization must not see them either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.errors import forbidden
from ihub.db.base import utcnow
from ihub.executors.supervisor import WorkerSupervisor
from ihub.runs.models import Run
from ihub.runs.status import RunStatus
from ihub.tenancy.permissions import Principal, Role

if TYPE_CHECKING:
    from ihub.common.context import AppContext

# Stuck runs listed by id (the count covers all of them).
STUCK_SHOWN = 20


def require_root_owner(principal: Principal) -> None:
    if principal.role is not Role.OWNER or principal.org_path.count("/") != 2:
        raise forbidden("only an Owner of the root organization may see the system status")


@dataclass(frozen=True)
class LeaseHolder:
    """A worker (lease owner) and the running runs it holds."""

    owner: str
    running: int
    # The soonest any of its leases expires: past means the worker stopped renewing.
    earliest_expiry: datetime | None
    expired: int


@dataclass(frozen=True)
class StuckRun:
    id: int
    project_id: int
    owner: str | None
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class SystemStatus:
    executor: str
    # How flows execute in this deployment, in words.
    execution: str
    worker_processes: int
    worker_pids: list[int]
    worker_restarts: int
    concurrency: int
    lease_seconds: float
    poll_interval: float
    retention_days: int
    queued: int
    # Queued and due now (the rest wait for a retry backoff or a delay step).
    queued_due: int
    running: int
    stuck: int
    checked_at: datetime
    leases: list[LeaseHolder] = field(default_factory=list)
    stuck_runs: list[StuckRun] = field(default_factory=list)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for aggregates: they are UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _execution(context: AppContext) -> tuple[str, list[int], int]:
    """(description, worker pids, restarts) of what executes flows for this process."""
    settings = context.settings
    supervisor = context.supervisor
    executor = context.executor
    if supervisor is None and isinstance(executor, WorkerSupervisor):
        supervisor = executor  # on the local executor, the supervisor is the executor itself
    if supervisor is not None:
        return (
            f"{settings.workers} worker process(es) supervised by this server",
            list(supervisor.pids),
            supervisor.restarts,
        )
    if executor is not None:
        return "inside this server's process (IHUB_WORKERS=0)", [], 0
    return "not in this process (serve --no-worker): separate `ihub worker` processes execute runs", [], 0


async def system_status(session: AsyncSession, context: AppContext, principal: Principal) -> SystemStatus:
    require_root_owner(principal)
    settings = context.settings
    now = utcnow()
    counts = dict(
        (
            await session.execute(
                select(Run.status, func.count())
                .where(Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
                .group_by(Run.status)
            )
        ).all()
    )
    queued_due = await session.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.status == RunStatus.QUEUED, (Run.next_attempt_at.is_(None)) | (Run.next_attempt_at <= now))
    )
    expired = (Run.status == RunStatus.RUNNING) & (Run.lease_expires_at < now)
    stuck = await session.scalar(select(func.count()).select_from(Run).where(expired))
    holders = await session.execute(
        select(
            Run.lease_owner,
            func.count(),
            func.min(Run.lease_expires_at),
            func.sum(case((Run.lease_expires_at < now, 1), else_=0)),
        )
        .where(Run.status == RunStatus.RUNNING)
        .group_by(Run.lease_owner)
        .order_by(Run.lease_owner)
    )
    stuck_rows = await session.execute(
        select(Run.id, Run.project_id, Run.lease_owner, Run.lease_expires_at)
        .where(expired)
        .order_by(Run.lease_expires_at, Run.id)
        .limit(STUCK_SHOWN)
    )
    execution, pids, restarts = _execution(context)
    return SystemStatus(
        executor=settings.executor,
        execution=execution,
        worker_processes=settings.workers,
        worker_pids=pids,
        worker_restarts=restarts,
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.run_lease_seconds,
        poll_interval=settings.poll_interval,
        retention_days=settings.run_retention_days,
        queued=int(counts.get(RunStatus.QUEUED.value, 0)),
        queued_due=int(queued_due or 0),
        running=int(counts.get(RunStatus.RUNNING.value, 0)),
        stuck=int(stuck or 0),
        checked_at=now,
        leases=[
            LeaseHolder(owner or "(none)", int(count), _aware(earliest), int(late or 0))
            for owner, count, earliest, late in holders.all()
        ],
        stuck_runs=[
            StuckRun(run_id, project_id, owner, _aware(expiry))
            for run_id, project_id, owner, expiry in stuck_rows.all()
        ],
    )
