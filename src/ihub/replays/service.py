"""Bulk replay: which runs a selection holds, which of them are skipped, and a batch's status changes.

A selection is a failure group (`failureKey`, ihub.runs.failures) or a filter (flow, time range, status), in the
subtree of one organization the caller sees; it holds only runs in a terminal status (`failed` unless told
otherwise), and only runs that existed when the batch was made (`upto_run_id`): runs failing later, the batch's
own replays among them, are not part of it, so a batch always ends.

Skipped (counted, never replayed) is a run that already has a replay (`runs.replay_of`) that:

| the replay is                           | reason           | why                                                  |
|-----------------------------------------|------------------|------------------------------------------------------|
| succeeded                               | already_replayed | the payload went through; again would duplicate it   |
| queued, running, waiting_for_connection | already_replayed | it is being replayed now                             |
| failed                                  | superseded       | the newer attempt stands for it (it is in the same   |
|                                         |                  | group when it failed the same way, and replayed)     |
| cancelled                               | (not skipped)    | someone stopped that attempt; the payload never went |

So each payload is replayed once per batch even when earlier single replays failed again: replaying both the
original and its failed replay would send the same payload twice.

Statuses of a batch (changed only by the guarded UPDATEs below and by ihub.replays.worker):

| from                      | to        | by                                        |
|---------------------------|-----------|-------------------------------------------|
| —                         | pending   | start (the API, `ihub replay start`)      |
| —                         | done      | start, when nothing is selected           |
| pending, running (lease   | running   | a worker's claim                          |
| free or expired)          |           |                                           |
| running                   | done      | its worker, when no run is left           |
| pending, running          | paused    | pause (the worker stops after its page)   |
| paused                    | pending   | resume (any worker claims it again)       |
| pending, running, paused  | cancelled | cancel (replays already started stay)     |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Update, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from ihub.common.errors import ApiError, bad_request, conflict, not_found
from ihub.config import Settings
from ihub.db.base import utcnow
from ihub.flows.models import Flow
from ihub.projects.models import Project
from ihub.replays.models import ReplayBatch, ReplayItem
from ihub.runs.models import Run
from ihub.runs.service import REPLAY_VERSIONS
from ihub.runs.status import TERMINAL_RUN_STATUSES, RunStatus
from ihub.tenancy.models import Organization
from ihub.tenancy.permissions import Principal
from ihub.tenancy.service import lock_org_for_limit, tenant_prefix

DEFAULT_RATE = 10
# Runs shown by a dry run: enough to recognize the failure, small enough for one page.
SAMPLE_SIZE = 50


class BatchStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


ACTIVE = (BatchStatus.PENDING, BatchStatus.RUNNING, BatchStatus.PAUSED)
CLAIMABLE = (BatchStatus.PENDING, BatchStatus.RUNNING)


class Skip(StrEnum):
    ALREADY_REPLAYED = "already_replayed"
    SUPERSEDED = "superseded"


class Outcome(StrEnum):
    REPLAYED = "replayed"
    SKIPPED = "skipped"
    FAILED = "failed"


ALREADY_REPLAYED_BY = (
    RunStatus.SUCCEEDED,
    RunStatus.QUEUED,
    RunStatus.RUNNING,
    RunStatus.WAITING_FOR_CONNECTION,
)
SUPERSEDED_BY = (RunStatus.FAILED,)


@dataclass(frozen=True)
class Selection:
    """Which runs a batch replays; None means any."""

    failure_key: str | None = None
    # A flow id (digits) or a flow key.
    flow: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str = RunStatus.FAILED.value

    def as_json(self) -> dict[str, Any]:
        return {
            "failureKey": self.failure_key,
            "flow": self.flow,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "status": self.status,
        }

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> Selection:
        def when(value: Any) -> datetime | None:
            return datetime.fromisoformat(value).astimezone(UTC) if value else None

        return cls(
            failure_key=stored.get("failureKey"),
            flow=stored.get("flow"),
            since=when(stored.get("since")),
            until=when(stored.get("until")),
            status=stored.get("status") or RunStatus.FAILED.value,
        )


def check_selection(selection: Selection) -> None:
    """Refuse what selects nothing sensible, with what to send instead."""
    terminal = sorted(TERMINAL_RUN_STATUSES)
    # Nothing chosen would be every failed run of the subtree (up to IHUB_REPLAY_MAX_RUNS payloads sent again):
    # what a script sends when its variable came out empty (`{"failureKey": null}`), not what anyone means. The
    # console previews nothing until something is chosen, for the same reason.
    if not (selection.failure_key or selection.flow or selection.since or selection.until):
        raise bad_request(
            "choose what to replay: a failureKey, a flow, or a time range (since, until)", "selection_empty"
        )
    if selection.status not in terminal:
        raise bad_request(f"status must be one of {', '.join(terminal)}: only finished runs are replayed in bulk")
    if selection.failure_key is not None and selection.status != RunStatus.FAILED:
        raise bad_request("a failureKey selects failed runs: leave status out or send failed")
    if selection.since and selection.until and selection.since >= selection.until:
        raise bad_request("since must be before until")


def check_version(version: str) -> None:
    if version not in REPLAY_VERSIONS:
        raise bad_request(f"version must be one of {', '.join(REPLAY_VERSIONS)}")


def check_rate(rate: int, settings: Settings) -> None:
    if not 1 <= rate <= settings.replay_max_rate:
        raise bad_request(f"rate must be from 1 to {settings.replay_max_rate} replays per second")


def selected(selection: Selection, org_path: str, upto_run_id: int | None = None) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a selection: the runs of `org_path`'s subtree (never beyond: another tenant's runs
    in the same failure group stay out), in the selection, and no newer than `upto_run_id`."""
    subtree = (
        select(Project.id)
        .join(Organization, Organization.id == Project.org_id)
        .where(Organization.path.startswith(org_path, autoescape=True))
    )
    clauses: list[ColumnElement[bool]] = [
        Run.project_id.in_(subtree.scalar_subquery()),
        Run.status == selection.status,
    ]
    if selection.failure_key is not None:
        clauses.append(Run.failure_key == selection.failure_key)
    if selection.flow is not None:
        if selection.flow.isdigit():
            clauses.append(Run.flow_id == int(selection.flow))
        else:
            clauses.append(Run.flow_id.in_(select(Flow.id).where(Flow.key == selection.flow).scalar_subquery()))
    if selection.since is not None:
        clauses.append(Run.created_at >= selection.since)
    if selection.until is not None:
        clauses.append(Run.created_at < selection.until)
    if upto_run_id is not None:
        clauses.append(Run.id <= upto_run_id)
    return clauses


def _has_replay(statuses: tuple[RunStatus, ...]) -> ColumnElement[bool]:
    replay = aliased(Run)
    return select(replay.id).where(replay.replay_of == Run.id, replay.status.in_(statuses)).exists()


async def skip_reasons(session: AsyncSession, run_ids: list[int]) -> dict[int, Skip]:
    """Why each of these runs is skipped (see the module docstring); runs absent from the answer are replayed."""
    if not run_ids:
        return {}
    rows = await session.execute(
        select(Run.replay_of, Run.status).where(
            Run.replay_of.in_(run_ids), Run.status.in_([*ALREADY_REPLAYED_BY, *SUPERSEDED_BY])
        )
    )
    reasons: dict[int, Skip] = {}
    for original, status in rows.all():
        if original is None:
            continue
        if status in ALREADY_REPLAYED_BY:
            reasons[original] = Skip.ALREADY_REPLAYED
        else:
            reasons.setdefault(original, Skip.SUPERSEDED)
    return reasons


@dataclass(frozen=True)
class SampleRun:
    run_id: int
    flow_id: int
    flow_key: str
    created_at: datetime
    error: str | None
    failed_step: str | None
    skip: Skip | None


@dataclass(frozen=True)
class Preview:
    """What a batch of this selection would do now."""

    selected: int
    already_replayed: int
    superseded: int
    # The first runs in the order a batch replays them (oldest first).
    sample: list[SampleRun]

    @property
    def to_replay(self) -> int:
        return self.selected - self.already_replayed - self.superseded


async def _count(session: AsyncSession, clauses: list[ColumnElement[bool]], *, at_most: int) -> int:
    """How many runs match, counting no further than `at_most` + 1. A dry run or a start is a POST: on SQLite it
    holds the hub's one write lock while it counts, so the count must stop at the limit it is checked against,
    whatever the tenant's history holds (a million runs took 2.6 s to count, every other tenant's writes waiting)."""
    matching = select(Run.id).where(*clauses).limit(at_most + 1).subquery()
    return int(await session.scalar(select(func.count()).select_from(matching)) or 0)


def too_large(count: int, max_runs: int) -> ApiError | None:
    if count <= max_runs:
        return None
    return bad_request(
        f"the selection holds more than the {max_runs} runs one bulk replay may replay: narrow it (a flow, "
        "since/until)",
        "selection_too_large",
    )


async def preview(session: AsyncSession, org_path: str, selection: Selection, *, max_runs: int) -> Preview:
    """The dry run: how many runs the selection holds, how many would be skipped and why, and which. A selection
    the start would refuse as too large (more than `max_runs`, IHUB_REPLAY_MAX_RUNS) is refused here too, after
    counting at most `max_runs` + 1 runs."""
    check_selection(selection)
    clauses = selected(selection, org_path)
    total = await _count(session, clauses, at_most=max_runs)
    refusal = too_large(total, max_runs)
    if refusal is not None:
        raise refusal
    already = await _count(session, [*clauses, _has_replay(ALREADY_REPLAYED_BY)], at_most=max_runs)
    superseded = await _count(
        session, [*clauses, _has_replay(SUPERSEDED_BY), ~_has_replay(ALREADY_REPLAYED_BY)], at_most=max_runs
    )
    rows = (
        await session.execute(
            select(Run.id, Run.flow_id, Flow.key, Run.created_at, Run.error, Run.failed_step)
            .join(Flow, Flow.id == Run.flow_id)
            .where(*clauses)
            .order_by(Run.id)
            .limit(SAMPLE_SIZE)
        )
    ).all()
    reasons = await skip_reasons(session, [row[0] for row in rows])
    sample = [
        SampleRun(run_id, flow_id, key, created_at, error, step, reasons.get(run_id))
        for run_id, flow_id, key, created_at, error, step in rows
    ]
    return Preview(total, already, superseded, sample)


# -- batches ------------------------------------------------------------------------------------------------


async def start(
    session: AsyncSession,
    settings: Settings,
    *,
    org_id: int,
    org_path: str,
    selection: Selection,
    version: str,
    rate: int,
    created_by: int | None,
) -> ReplayBatch:
    """A new batch (pending: a hub process's worker takes it up), or `done` at once when it selects nothing."""
    check_selection(selection)
    check_version(version)
    check_rate(rate, settings)
    tenant, prefix = tenant_prefix(org_path)
    await lock_org_for_limit(session, tenant)
    active = await _active_in_tenant(session, tenant, prefix)
    if active >= settings.replay_max_active_per_org:
        where = (
            f"organization {tenant} has" if prefix is None else f"organization {tenant} and its sub-organizations have"
        )
        raise conflict(
            f"{where} {active} bulk replays pending, running or paused (at most "
            f"{settings.replay_max_active_per_org}): wait for one to finish, or cancel one",
            "too_many_replays",
        )
    upto = int(await session.scalar(select(func.max(Run.id))) or 0)
    count = await _count(session, selected(selection, org_path, upto), at_most=settings.replay_max_runs)
    refusal = too_large(count, settings.replay_max_runs)
    if refusal is not None:
        raise refusal
    now = utcnow()
    batch = ReplayBatch(
        org_id=org_id,
        created_by=created_by,
        selection=selection.as_json(),
        version=version,
        rate=rate,
        status=BatchStatus.PENDING if count else BatchStatus.DONE,
        upto_run_id=upto,
        cursor=0,
        selected=count,
        replayed=0,
        skipped=0,
        failed=0,
        finished_at=None if count else now,
        created_at=now,
    )
    session.add(batch)
    await session.flush()
    return batch


async def _active_in_tenant(session: AsyncSession, tenant: int, prefix: str | None) -> int:
    """Active batches of the tenant (tenancy.service.tenant_prefix): a sub-organization does not get a limit of
    its own, or a tenant could fill every replay worker by adding sub-organizations."""
    query = select(func.count()).select_from(ReplayBatch).where(ReplayBatch.status.in_(ACTIVE))
    if prefix is None:
        query = query.where(ReplayBatch.org_id == tenant)
    else:
        query = query.join(Organization, Organization.id == ReplayBatch.org_id).where(
            Organization.path.startswith(prefix, autoescape=True)
        )
    return int(await session.scalar(query) or 0)


async def visible_batch(session: AsyncSession, principal: Principal | None, batch_id: int) -> ReplayBatch:
    """The batch, if `principal` sees its organization (None: the server's shell sees all); 404 otherwise."""
    row = (
        await session.execute(
            select(ReplayBatch, Organization.path)
            .join(Organization, Organization.id == ReplayBatch.org_id)
            .where(ReplayBatch.id == batch_id)
        )
    ).first()
    if row is None or (principal is not None and not principal.sees(row[1])):
        raise not_found("replay", batch_id)
    batch, _path = row
    return batch


async def org_path(session: AsyncSession, org_id: int) -> str:
    path = await session.scalar(select(Organization.path).where(Organization.id == org_id))
    if path is None:
        raise not_found("organization", org_id)
    return path


async def list_batches(
    session: AsyncSession, org_path: str, *, limit: int = 50, before: int | None = None
) -> tuple[list[ReplayBatch], int | None]:
    """The batches of an organization's subtree, newest first (keyset on the id); and the next page's cursor."""
    query = (
        select(ReplayBatch)
        .join(Organization, Organization.id == ReplayBatch.org_id)
        .where(Organization.path.startswith(org_path, autoescape=True))
    )
    if before is not None:
        query = query.where(ReplayBatch.id < before)
    rows = list((await session.scalars(query.order_by(ReplayBatch.id.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


async def items(session: AsyncSession, batch_id: int, *, limit: int = 50) -> list[ReplayItem]:
    """The batch's latest handled runs (what it did with each), newest first."""
    query = select(ReplayItem).where(ReplayItem.batch_id == batch_id).order_by(ReplayItem.run_id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def pause(session: AsyncSession, batch: ReplayBatch) -> ReplayBatch:
    """pending or running → paused; its worker stops after the page it is on (committed pages stay done)."""
    return await _transition(
        session,
        batch,
        (BatchStatus.PENDING, BatchStatus.RUNNING),
        status=BatchStatus.PAUSED,
        lease_owner=None,
        lease_expires_at=None,
    )


async def resume(session: AsyncSession, batch: ReplayBatch) -> ReplayBatch:
    """paused → pending: a worker claims it and goes on after its cursor."""
    return await _transition(session, batch, (BatchStatus.PAUSED,), status=BatchStatus.PENDING)


async def cancel(session: AsyncSession, batch: ReplayBatch) -> ReplayBatch:
    """pending, running or paused → cancelled. Replays it started stay (cancel them as runs if needed)."""
    return await _transition(
        session,
        batch,
        ACTIVE,
        status=BatchStatus.CANCELLED,
        finished_at=utcnow(),
        lease_owner=None,
        lease_expires_at=None,
    )


async def _transition(
    session: AsyncSession, batch: ReplayBatch, sources: tuple[BatchStatus, ...], **values: Any
) -> ReplayBatch:
    changed = await _rowcount(
        session, update(ReplayBatch).where(ReplayBatch.id == batch.id, ReplayBatch.status.in_(sources)).values(**values)
    )
    await session.refresh(batch)
    if not changed:
        raise conflict(f"replay {batch.id} is {batch.status}", "replay_" + batch.status)
    return batch


# -- what a worker does (ihub.replays.worker) ------------------------------------------------------------------


def _free(now: datetime) -> ColumnElement[bool]:
    """A batch a worker may take: pending, or running with its worker's lease expired (or given back)."""
    return and_(
        ReplayBatch.status.in_(CLAIMABLE),
        or_(ReplayBatch.lease_owner.is_(None), ReplayBatch.lease_expires_at < now),
    )


async def claimable(session: AsyncSession, now: datetime, *, limit: int = 20) -> list[int]:
    """Ids of batches a worker may take now, oldest first (a read: the poll takes no write lock when idle)."""
    query = select(ReplayBatch.id).where(_free(now)).order_by(ReplayBatch.id).limit(limit)
    return list((await session.scalars(query)).all())


async def claim(session: AsyncSession, batch_id: int, owner: str, now: datetime, lease_seconds: float) -> bool:
    """Take the batch under `owner`'s lease if it is still free (two workers racing: one wins)."""
    return bool(
        await _rowcount(
            session,
            update(ReplayBatch)
            .where(ReplayBatch.id == batch_id, _free(now))
            .values(
                status=BatchStatus.RUNNING,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            ),
        )
    )


async def renew(session: AsyncSession, batch_id: int, owner: str, now: datetime, lease_seconds: float) -> bool:
    """Extend the lease if the batch is still running under `owner`: the first statement of every page, so the
    page's writes happen only under the lease (on PostgreSQL the row stays locked until the page commits: a
    pause or a takeover waits for it)."""
    return bool(
        await _rowcount(
            session,
            update(ReplayBatch)
            .where(mine(batch_id, owner))
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds)),
        )
    )


def mine(batch_id: int, owner: str) -> ColumnElement[bool]:
    return and_(ReplayBatch.id == batch_id, ReplayBatch.lease_owner == owner, ReplayBatch.status == BatchStatus.RUNNING)


async def release(session: AsyncSession, owner: str) -> None:
    """Give up every batch `owner` runs (shutdown): another process goes on at once instead of after the lease."""
    await _rowcount(
        session,
        update(ReplayBatch)
        .where(ReplayBatch.lease_owner == owner, ReplayBatch.status == BatchStatus.RUNNING)
        .values(lease_owner=None, lease_expires_at=None),
    )


async def next_runs(session: AsyncSession, batch: ReplayBatch, limit: int) -> list[Run]:
    """The next runs of the batch after its cursor, oldest first, locked until the page commits.

    The lock is what makes the skip rule hold between batches: two batches whose selections overlap (Start
    clicked twice, or a parent's and a child's Admin replaying one group) run at once on different workers.
    Without it, on PostgreSQL both pages read "no replay yet" for the same runs and both replayed them: every
    payload sent twice. With it, the second page waits for the first to commit, and its `skip_reasons` (a later
    statement, a fresh snapshot under READ COMMITTED) sees the first one's replays and skips them. Locked in id
    order, so overlapping pages never deadlock. SQLite needs no lock: a page's first statement (`renew`) takes
    the database's one write lock."""
    path = await org_path(session, batch.org_id)
    clauses = selected(Selection.from_json(batch.selection), path, batch.upto_run_id)
    query = select(Run).where(*clauses, Run.id > batch.cursor).order_by(Run.id).limit(limit)
    # FOR NO KEY UPDATE: enough to exclude another page; it does not block rows referring to the run.
    return list((await session.scalars(query.with_for_update(key_share=True))).all())


async def _rowcount(session: AsyncSession, statement: Update) -> int:
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return cast("CursorResult[Any]", result).rowcount


def error_detail(error: ApiError) -> str:
    return error.message[:300]
