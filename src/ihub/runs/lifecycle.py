"""Every change of a run's status, each under the guard that makes it safe to race.

A run's status only changes here (tests/runs/test_lifecycle.py scans the source so that it stays that way).
Each function is one guarded UPDATE (two for a claim) on the caller's session: it never commits, so the
callers keep their short explicit transactions (the engine writes step records in the same transaction as the
lease renewal that proves it may). The guard is in the UPDATE's WHERE clause and the answer is its row count:
two workers racing for one run, or a stale worker writing after its lease was taken over, change nothing.

| function    | from → to                            | who                | guard (WHERE)                             |
|-------------|--------------------------------------|--------------------|-------------------------------------------|
| (create)    | — → queued                           | service.create_run | — (an INSERT)                             |
| claim       | queued → running                     | any engine         | status = queued AND next_attempt_at ≤ now |
| claim       | running → running (new owner)        | any engine         | status = running AND lease expired        |
| renew       | running → running (lease extended)   | lease owner        | mine [AND NOT cancel_requested]           |
| finish      | running → succeeded/failed/cancelled | lease owner        | mine                                      |
| release     | running → queued (due later)         | lease owner        | mine                                      |
| release_all | running → queued (due now)           | owner, shutdown    | mine                                      |
| park        | running → waiting                    | lease owner        | mine                                      |
| resume      | waiting → queued (due now)           | reconnect          | status = waiting AND its project, slot    |
| claim       | waiting → running (to fail it)       | any engine         | status = waiting AND parked_until ≤ now   |
| cancel      | queued or waiting → cancelled        | the API            | status IN (queued, waiting)               |
| cancel      | running → running + cancel_requested | the API            | status = running                          |

"mine" is `lease_owner = me AND status = running`; "waiting" is `waiting_for_connection`. The API's
cancel is POST /run/{id}/cancel; a run flagged there is finished as cancelled by its lease owner before its next
step.

A claim adds one to `attempt`, sets a lease of `lease_seconds` and `started_at` (the first claim only); it is
also how an expired lease is reclaimed: nothing else reschedules a run whose worker died (the executors' pollers
and the procrastinate reconciler only find such runs with `claimable` and hand their ids to an engine).
`lease_owner` stays set after finish and release: it tells which worker ran the run last (shown as `worker`).
Terminal statuses (succeeded, failed, cancelled) are never left: no guard above matches them.

A parked run (`waiting_for_connection`, `park`) waits for a person to reconnect one connection of its project:
it holds no worker and no lease, and it is not a failure, so no retry is spent on it. `resume` (called
when that connection is reconnected, ihub.projects.health.mark_reconnected) queues it again, due now; the
resumed run restores its finished steps and runs the parked one again. A run still parked at `parked_until` is
claimable like a due run, so the pollers that find due runs find it; the claim keeps `waiting_for_slot` and
`parked_until`, and the engine, seeing them on a run it claimed, finishes it as failed instead of executing it.
Resume and the expiry's claim both require `status = waiting_for_connection`: whichever comes first wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Update, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.db.base import utcnow
from ihub.runs.models import Run
from ihub.runs.status import TERMINAL_RUN_STATUSES, RunStatus

CANCELLED_ON_REQUEST = "cancelled on request"


class Renewal(Enum):
    RENEWED = "renewed"
    # The run is still ours, but cancel was requested: the caller stops and finishes it as cancelled.
    CANCEL_REQUESTED = "cancel_requested"
    # Another worker reclaimed the run (our lease expired), or it is no longer running.
    LEASE_LOST = "lease_lost"


class Cancellation(Enum):
    # It was queued: cancelled at once.
    CANCELLED = "cancelled"
    # It is running: flagged; its lease owner stops before its next step and finishes it as cancelled.
    REQUESTED = "requested"
    # It finished (or is finishing) meanwhile: nothing changed.
    TOO_LATE = "too_late"


@dataclass(frozen=True)
class Lease:
    """Who holds a run, and for how long a claim or renewal makes the lease last."""

    owner: str
    seconds: float

    def expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)


def claimable(now: datetime, *, due_before: datetime | None = None) -> ColumnElement[bool]:
    """Runs a claim may take: queued and due (before `due_before` if given), or running with an expired lease."""
    due = due_before or now
    return or_(
        and_(Run.status == RunStatus.QUEUED, or_(Run.next_attempt_at.is_(None), Run.next_attempt_at <= due)),
        and_(Run.status == RunStatus.RUNNING, Run.lease_expires_at < now),
        # A parked run whose wait ran out: claimed only to be failed (the engine sees parked_until).
        and_(Run.status == RunStatus.WAITING_FOR_CONNECTION, Run.parked_until <= due),
    )


def owned_by(run_id: int, owner: str) -> ColumnElement[bool]:
    """The run is running under this owner's lease: the guard of every write a worker makes for a run."""
    return and_(Run.id == run_id, Run.lease_owner == owner, Run.status == RunStatus.RUNNING)


async def claim(session: AsyncSession, run_id: int, lease: Lease, *, now: datetime | None = None) -> bool:
    """queued (due) or running (lease expired) → running under `lease`; False (row unchanged) otherwise."""
    now = now or utcnow()
    claimed = await _changed(
        session,
        update(Run)
        .where(Run.id == run_id, claimable(now))
        .values(
            status=RunStatus.RUNNING,
            lease_owner=lease.owner,
            lease_expires_at=lease.expiry(now),
            attempt=Run.attempt + 1,
            next_attempt_at=None,
        ),
    )
    if not claimed:
        return False
    # started_at is the first claim's time: a resumed run keeps it.
    await _changed(session, update(Run).where(Run.id == run_id, Run.started_at.is_(None)).values(started_at=now))
    return True


async def renew(
    session: AsyncSession,
    run_id: int,
    lease: Lease,
    *,
    refuse_if_cancel_requested: bool = False,
    now: datetime | None = None,
) -> Renewal:
    """running → running with the lease extended, if `lease.owner` still holds it.

    With `refuse_if_cancel_requested` a run whose cancel was requested is not renewed either: the caller is
    about to start a step with side effects and must stop instead."""
    condition = owned_by(run_id, lease.owner)
    if refuse_if_cancel_requested:
        condition = and_(condition, Run.cancel_requested.is_(False))
    now = now or utcnow()
    if await _changed(session, update(Run).where(condition).values(lease_expires_at=lease.expiry(now))):
        return Renewal.RENEWED
    if refuse_if_cancel_requested:
        cancel = await session.scalar(select(Run.cancel_requested).where(owned_by(run_id, lease.owner)))
        if cancel:
            return Renewal.CANCEL_REQUESTED
    return Renewal.LEASE_LOST


async def finish(
    session: AsyncSession,
    run_id: int,
    owner: str,
    status: RunStatus,
    *,
    result: Any = None,
    error: str | None = None,
    failed_step: str | None = None,
    failure_key: str | None = None,
    now: datetime | None = None,
) -> bool:
    """running → `status` (succeeded, failed or cancelled) with its result or error, by the lease owner only.
    A failed run also gets its failing step and failure group (ihub.runs.failures)."""
    if status not in TERMINAL_RUN_STATUSES:
        raise ValueError(f"a run finishes as one of {sorted(TERMINAL_RUN_STATUSES)}, not {status!r}")
    return await _changed(
        session,
        update(Run)
        .where(owned_by(run_id, owner))
        .values(
            status=status,
            finished_at=now or utcnow(),
            error=error,
            result=result,
            lease_expires_at=None,
            failed_step=failed_step,
            failure_key=failure_key,
        ),
    )


async def release(session: AsyncSession, run_id: int, owner: str, *, next_attempt_at: datetime | None) -> bool:
    """running → queued, due at `next_attempt_at` (a retry's backoff, a delay, a later attempt after an error),
    by the lease owner only. The run holds no worker while it waits."""
    return await _changed(
        session,
        update(Run)
        .where(owned_by(run_id, owner))
        .values(status=RunStatus.QUEUED, next_attempt_at=next_attempt_at, lease_expires_at=None),
    )


async def park(session: AsyncSession, run_id: int, owner: str, *, slot: str, until: datetime) -> bool:
    """running → waiting_for_connection for connection `slot` of the run's project, until `until` (then it
    fails), by the lease owner only. The run holds no worker while it waits; `attempt` is not reset."""
    return await _changed(
        session,
        update(Run)
        .where(owned_by(run_id, owner))
        .values(
            status=RunStatus.WAITING_FOR_CONNECTION,
            waiting_for_slot=slot,
            parked_until=until,
            next_attempt_at=None,
            lease_expires_at=None,
        ),
    )


async def resume(session: AsyncSession, project_id: int, slot: str, *, now: datetime | None = None) -> list[int]:
    """waiting_for_connection → queued (due now) for every run of the project parked on connection `slot`:
    it was reconnected. Returns their ids (the caller tells the executor once committed)."""
    waiting = and_(
        Run.project_id == project_id,
        Run.status == RunStatus.WAITING_FOR_CONNECTION,
        Run.waiting_for_slot == slot,
    )
    ids = list((await session.scalars(select(Run.id).where(waiting))).all())
    if ids:
        await _rowcount(
            session,
            update(Run)
            .where(waiting, Run.id.in_(ids))
            .values(status=RunStatus.QUEUED, next_attempt_at=now or utcnow(), waiting_for_slot=None, parked_until=None),
        )
    return ids


async def release_all(session: AsyncSession, owner: str, *, now: datetime | None = None) -> list[int]:
    """running → queued (due now) for every run `owner` holds: on shutdown, so that nobody waits for a lease."""
    mine = and_(Run.lease_owner == owner, Run.status == RunStatus.RUNNING)
    ids = list((await session.scalars(select(Run.id).where(mine))).all())
    if ids:
        await _rowcount(
            session,
            update(Run)
            .where(mine, Run.id.in_(ids))
            .values(status=RunStatus.QUEUED, next_attempt_at=now or utcnow(), lease_expires_at=None),
        )
    return ids


async def cancel(session: AsyncSession, run_id: int, *, now: datetime | None = None) -> Cancellation:
    """queued or waiting_for_connection → cancelled at once; running → cancel_requested (its owner stops before
    its next step)."""
    cancelled = await _changed(
        session,
        update(Run)
        .where(Run.id == run_id, Run.status.in_([RunStatus.QUEUED, RunStatus.WAITING_FOR_CONNECTION]))
        .values(
            status=RunStatus.CANCELLED,
            finished_at=now or utcnow(),
            error=CANCELLED_ON_REQUEST,
            cancel_requested=True,
        ),
    )
    if cancelled:
        return Cancellation.CANCELLED
    requested = await _changed(
        session,
        update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING).values(cancel_requested=True),
    )
    return Cancellation.REQUESTED if requested else Cancellation.TOO_LATE


async def _changed(session: AsyncSession, statement: Update) -> bool:
    """Execute a guarded UPDATE of one run (by id); True if it changed that run (the guard held)."""
    return await _rowcount(session, statement) == 1


async def _rowcount(session: AsyncSession, statement: Update) -> int:
    # The ORM objects of the session are not synchronized: callers read the row again when they need it.
    result = await session.execute(statement.execution_options(synchronize_session=False))
    # An UPDATE returns a CursorResult (it has rowcount); Session.execute is typed to return the base Result.
    return cast("CursorResult[Any]", result).rowcount
