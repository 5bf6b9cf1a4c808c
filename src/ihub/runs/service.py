"""Creating and reading runs. The engine (ihub.flows) executes them; executors carry only run ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Row, Select, Text, and_, cast, delete, func, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.body import refuse_nul
from ihub.common.errors import ApiError, bad_request, conflict, not_found
from ihub.common.json_errors import json_error_text
from ihub.common.jsonbounds import payload_depth_error
from ihub.db.base import utcnow
from ihub.db.unit_of_work import after_commit
from ihub.executors import dispatch
from ihub.flows.models import Flow
from ihub.flows.service import LoadedFlow, load_flow
from ihub.flows.storage import unstorable
from ihub.flows.triggers import ManualTrigger, received, replayed
from ihub.observability import metrics
from ihub.projects.models import Project
from ihub.runs import lifecycle
from ihub.runs.models import Run, StepRecord
from ihub.runs.status import TERMINAL_RUN_STATUSES, RunStatus
from ihub.tenancy.models import Organization
from ihub.tenancy.permissions import Principal

if TYPE_CHECKING:
    from ihub.common.context import AppContext


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
        status=RunStatus.QUEUED,
        trigger_type=trigger_type,
        trigger=received(trigger, utcnow()),
        replay_of=replay_of,
        next_attempt_at=utcnow(),
    )
    session.add(run)
    await session.flush()
    return run


async def due_run_ids(
    session: AsyncSession, *, limit: int, exclude: set[int] | None = None, older_than: datetime | None = None
) -> list[int]:
    """Runs an executor should pick up now: queued and due (before `older_than` if given), or running with an
    expired lease (their worker died)."""
    query = (
        select(Run.id)
        .where(lifecycle.claimable(utcnow(), due_before=older_than))
        .order_by(Run.next_attempt_at, Run.id)
        .limit(limit + len(exclude or ()))
    )
    ids = [run_id for run_id in (await session.scalars(query)).all() if run_id not in (exclude or set())]
    return ids[:limit]


async def next_wakeup(session: AsyncSession) -> datetime | None:
    """When the earliest queued run, running lease or parked run's wait becomes due (None if nothing is pending)."""
    queued = await session.scalar(select(func.min(Run.next_attempt_at)).where(Run.status == RunStatus.QUEUED))
    leased = await session.scalar(select(func.min(Run.lease_expires_at)).where(Run.status == RunStatus.RUNNING))
    # A parked run is due when its wait runs out (to be failed); a reconnect wakes the executor itself.
    parked = await session.scalar(
        select(func.min(Run.parked_until)).where(Run.status == RunStatus.WAITING_FOR_CONNECTION)
    )
    times = [t for t in (queued, leased, parked) if t is not None]
    if not times:
        return None
    # SQLite hands back naive datetimes for aggregates: they are UTC.
    return min(t if t.tzinfo else t.replace(tzinfo=UTC) for t in times)


async def purge_runs(session: AsyncSession, *, older_than_days: int) -> int:
    """Delete finished runs (and their step records) created more than `older_than_days` ago."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    old = select(Run.id).where(Run.created_at < cutoff, Run.status.in_(sorted(TERMINAL_RUN_STATUSES)))
    ids = list((await session.scalars(old)).all())
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        await session.execute(delete(StepRecord).where(StepRecord.run_id.in_(chunk)))
        await session.execute(delete(Run).where(Run.id.in_(chunk)))
    return len(ids)


# -- the run API (tenancy: the caller must see the project's organization) --------------------------------


async def visible_project_path(session: AsyncSession, principal: Principal, project_id: int) -> None:
    path = await session.scalar(
        select(Organization.path).join(Project, Project.org_id == Organization.id).where(Project.id == project_id)
    )
    if path is None or not principal.sees(path):
        raise not_found("project", project_id)


async def visible_run(session: AsyncSession, principal: Principal, run_id: int) -> Run:
    row = (
        await session.execute(
            select(Run, Organization.path)
            .join(Project, Project.id == Run.project_id)
            .join(Organization, Organization.id == Project.org_id)
            .where(Run.id == run_id)
        )
    ).first()
    if row is None or not principal.sees(row.path):
        raise not_found("run", run_id)
    run, _path = row  # unpacking keeps the Row's column types; row.Run would be Any
    return run


async def visible_flow(session: AsyncSession, principal: Principal, flow_id: int) -> LoadedFlow:
    loaded = await load_flow(session, flow_id)
    if loaded is None or not principal.sees(loaded.org_path):
        raise not_found("flow", flow_id)
    return loaded


@dataclass(frozen=True)
class RunFilter:
    """What a run list is narrowed to; None means any."""

    status: str | None = None
    # A flow id (digits) or a flow key.
    flow: str | None = None
    # Created at or after `since`, and before `until`.
    since: datetime | None = None
    until: datetime | None = None
    # Failed runs of one failure group (ihub.runs.failures).
    failure_key: str | None = None


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    # The cursor of the next (older) page, and of the previous (newer) one; None when there is none.
    older: int | None
    newer: int | None


async def list_runs(
    session: AsyncSession,
    project_id: int,
    *,
    status: str | None = None,
    flow: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: int | None = None,
) -> tuple[list[Run], int | None]:
    """Newest first by id (keyset): `cursor` is the last id of the previous page."""
    filters = RunFilter(status, flow, since, until)
    page = await page_runs(session, filters, project_id=project_id, limit=limit, before=cursor)
    return page.runs, page.older


# A subtree's page is a UNION ALL of one indexed top-N query per project (or per matching flow) while the
# subtree has at most this many of them; past it, one query over the subtree's projects at once (`project_id IN`
# the subtree), where the database chooses between walking the primary key newest first (a subtree that holds
# most runs, or a common filter: a page is found quickly) and its per-project index then a sort (a rare filter).
# Each arm of the union costs its statement's preparation whatever the volume: bench/runs_at_volume.py measured
# a 242-arm union at ~110 ms even with 20,000 runs (about 0.45 ms an arm on a loaded 2-core machine), so 40
# arms keep it near 20 ms (docs/operations.md, "Runs at volume").
UNION_LIMIT = 40

# A page's runs carry their trigger payloads (each up to IHUB_MAX_BODY_BYTES) and results. 200 runs of a 1 MB
# payload made one 184 MB answer, built on the event loop (every other request waited 4 to 6 s) and 3 GB of
# memory for four at once. A page therefore ends early once its runs' payloads (trigger, result and error, as
# characters of JSON) pass this, with a cursor to the next page as usual; it always holds at least one run.
PAGE_PAYLOAD_CHARS = 8 * 1024 * 1024


@dataclass(frozen=True)
class IdRange:
    """A time range as a range of run ids: `low` inclusive, `high` exclusive; None is unbounded. `empty`
    when no run was created at or after `since`."""

    low: int | None = None
    high: int | None = None
    empty: bool = False


async def first_id_at_or_after(session: AsyncSession, moment: datetime) -> int | None:
    """The id of the first run created at or after `moment` (one seek on `ix_runs_created_at`)."""
    query = select(Run.id).where(Run.created_at >= moment).order_by(Run.created_at, Run.id).limit(1)
    return await session.scalar(query)


async def id_range(session: AsyncSession, since: datetime | None, until: datetime | None) -> IdRange:
    """Runs created in [since, until) as ids: ids grow with time (each run's id and created_at are set in the
    same insert), so the range's ids are those from the first run created at or after `since` up to (not
    including) the first run created at or after `until`. Tolerance: a run inserted concurrently may get an
    id one or two past a run created a few milliseconds later; it is then listed on that side of the
    boundary. Every filter's index ends in `id`, so the range narrows each of them."""
    low = await first_id_at_or_after(session, since) if since is not None else None
    if since is not None and low is None:
        return IdRange(empty=True)
    high = await first_id_at_or_after(session, until) if until is not None else None
    return IdRange(low, high)


async def _partitions(
    session: AsyncSession, filters: RunFilter, project_id: int | None, org_path: str | None
) -> list[ColumnElement[bool]] | None:
    """What a page is a union of: one equality an index starts with per project of the scope (or per flow
    of the scope when a flow is asked for). None when there are more than UNION_LIMIT (the caller reads the
    whole scope in one query instead); an empty list when nothing in the scope can match."""
    if project_id is not None:
        projects: list[int] | None = [project_id]
    else:
        assert org_path is not None
        found = await session.scalars(_subtree_projects(org_path).order_by(Project.id).limit(UNION_LIMIT + 1))
        projects = list(found.all())
        if len(projects) > UNION_LIMIT:
            projects = None
    if not filters.flow:
        return None if projects is None else [Run.project_id == project for project in projects]
    flows = select(Flow.id)
    if filters.flow.isdigit():
        flows = flows.where(Flow.id == int(filters.flow))
    else:
        flows = flows.where(Flow.key == filters.flow)
    if projects is not None:
        flows = flows.where(Flow.project_id.in_(projects))
    else:
        assert org_path is not None
        flows = flows.where(Flow.project_id.in_(_subtree_projects(org_path).scalar_subquery()))
    flow_ids = list((await session.scalars(flows.order_by(Flow.id).limit(UNION_LIMIT + 1))).all())
    if len(flow_ids) > UNION_LIMIT:
        return None
    return [Run.flow_id == flow for flow in flow_ids]


def _subtree_projects(org_path: str) -> Select[int]:
    query = select(Project.id).join(Organization, Organization.id == Project.org_id)
    return query.where(Organization.path.startswith(org_path, autoescape=True))


def _page_query(
    filters: RunFilter,
    ids: IdRange,
    partitions: list[ColumnElement[bool]] | None,
    scope: ColumnElement[bool],
    *,
    newest_first: bool,
    bound: ColumnElement[bool] | None,
    limit: int,
) -> Select[Run]:
    """The page's runs: with few partitions, each partition's top `limit` ids through its own index, merged;
    otherwise one query over the rows `scope` admits (the database picks its plan)."""
    conditions: list[ColumnElement[bool]] = []
    if filters.status:
        conditions.append(Run.status == filters.status)
    if filters.failure_key:
        conditions.append(Run.failure_key == filters.failure_key)
    if ids.low is not None:
        conditions.append(Run.id >= ids.low)
    if ids.high is not None:
        conditions.append(Run.id < ids.high)
    if bound is not None:
        conditions.append(bound)
    order = Run.id.desc() if newest_first else Run.id.asc()
    if partitions is None:
        return select(Run).where(scope, *conditions).order_by(order).limit(limit)
    if len(partitions) == 1:
        return select(Run).where(partitions[0], *conditions).order_by(order).limit(limit)
    tops = [
        select(Run.id).where(partition, *conditions).order_by(order).limit(limit).subquery() for partition in partitions
    ]
    merged = union_all(*(select(top.c.id) for top in tops)).subquery()
    chosen = select(merged.c.id).order_by(merged.c.id.desc() if newest_first else merged.c.id.asc()).limit(limit)
    return select(Run).where(Run.id.in_(chosen.scalar_subquery())).order_by(order)


async def page_runs(
    session: AsyncSession,
    filters: RunFilter,
    *,
    project_id: int | None = None,
    org_path: str | None = None,
    limit: int = 50,
    before: int | None = None,
    after: int | None = None,
) -> RunPage:
    """One page of runs, newest first, of a project or of every project in an organization's subtree.

    Keyset paging on the id (ids grow with time): `before` gives the page after a page whose last id it is
    (older runs), `after` the page before one whose first id it is (newer runs). Each filter reads an index
    that starts with an equality and ends in `id`, so a page costs `limit` index entries however rare the
    matches are: a project's runs `ix_runs_project_created` (project_id, id), of one status
    `ix_runs_project_status` (project_id, status, id); a flow's `ix_runs_flow` (flow_id, id) and
    `ix_runs_flow_status` (flow_id, status, id); a failure group's `ix_runs_failure_project` (failure_key,
    project_id, id), or `ix_runs_failure_key` (failure_key, id) past UNION_LIMIT. A time range becomes an id
    range (`id_range`). A subtree is a union of its projects' (or matching flows') pages, up to UNION_LIMIT of them.
    """
    if project_id is None and org_path is None:
        raise ValueError("a page of runs is of a project or of an organization's subtree")
    ids = await id_range(session, filters.since, filters.until)
    if ids.empty:
        return RunPage([], None, None)
    partitions = await _partitions(session, filters, project_id, org_path)
    if partitions == []:
        return RunPage([], None, None)
    scope = _fallback_scope(filters, project_id, org_path)
    if after is not None:
        # The previous page: the `limit` runs just newer than `after`, read oldest first, shown newest first.
        query = _page_query(filters, ids, partitions, scope, newest_first=False, bound=Run.id > after, limit=limit + 1)
        rows, cut = await _fetch(session, query, newest_first=False)
        rows.sort(key=lambda run: run.id)
        more = cut or len(rows) > limit
        rows = rows[:limit]
        rows.reverse()
        return RunPage(rows, rows[-1].id if rows else None, rows[0].id if more and rows else None)
    bound = Run.id < before if before is not None else None
    query = _page_query(filters, ids, partitions, scope, newest_first=True, bound=bound, limit=limit + 1)
    rows, cut = await _fetch(session, query, newest_first=True)
    rows.sort(key=lambda run: run.id, reverse=True)
    more = cut or len(rows) > limit
    rows = rows[:limit]
    newer = rows[0].id if before is not None and rows else None
    return RunPage(rows, rows[-1].id if more and rows else None, newer)


async def _fetch(session: AsyncSession, query: Select[Run], *, newest_first: bool) -> tuple[list[Run], bool]:
    """The runs `query` selects, in page order, up to PAGE_PAYLOAD_CHARS of payloads (at least one); and whether
    some were left out for that. Their sizes are read first, so a left-out payload is never loaded."""
    size = (
        func.coalesce(func.length(cast(Run.trigger, Text)), 0)
        + func.coalesce(func.length(cast(Run.result, Text)), 0)
        + func.coalesce(func.length(Run.error), 0)
    )
    sized = sorted((await session.execute(query.with_only_columns(Run.id, size))).tuples().all(), reverse=newest_first)
    kept: list[int] = []
    total = 0
    for run_id, chars in sized:
        if kept and total + chars > PAGE_PAYLOAD_CHARS:
            break
        kept.append(run_id)
        total += chars
    if not kept:
        return [], False
    return list((await session.scalars(select(Run).where(Run.id.in_(kept)))).all()), len(kept) < len(sized)


def _fallback_scope(filters: RunFilter, project_id: int | None, org_path: str | None) -> ColumnElement[bool]:
    """Which rows the one query over a big scope keeps (a subtree with more than UNION_LIMIT projects or flows)."""
    conditions: list[ColumnElement[bool]] = []
    if project_id is not None:
        conditions.append(Run.project_id == project_id)
    if org_path is not None:
        conditions.append(Run.project_id.in_(_subtree_projects(org_path).scalar_subquery()))
    if filters.flow:
        flows = select(Flow.id)
        flows = (
            flows.where(Flow.id == int(filters.flow))
            if filters.flow.isdigit()
            else flows.where(Flow.key == filters.flow)
        )
        conditions.append(Run.flow_id.in_(flows.scalar_subquery()))
    return and_(true(), *conditions)


async def visible_org_path(session: AsyncSession, principal: Principal, org_id: int) -> str:
    path = await session.scalar(select(Organization.path).where(Organization.id == org_id))
    if path is None or not principal.sees(path):
        raise not_found("organization", org_id)
    return path


async def flows_in(
    session: AsyncSession, *, project_id: int | None = None, org_path: str | None = None
) -> list[tuple[int, str, str]]:
    """(flow id, flow key, project name) of a project's or a subtree's flows, for choosing one."""
    query = select(Flow.id, Flow.key, Project.name).join(Project, Project.id == Flow.project_id)
    if project_id is not None:
        query = query.where(Flow.project_id == project_id)
    if org_path is not None:
        query = query.join(Organization, Organization.id == Project.org_id).where(
            Organization.path.startswith(org_path, autoescape=True)
        )
    rows = await session.execute(query.order_by(Project.name, Flow.key))
    return [(flow_id, key, name) for flow_id, key, name in rows.all()]


async def project_names(session: AsyncSession, project_ids: set[int]) -> dict[int, str]:
    if not project_ids:
        return {}
    rows = await session.execute(select(Project.id, Project.name).where(Project.id.in_(project_ids)))
    return {project_id: name for project_id, name in rows.all()}


# Step records shown per GET /run/{id}: a run may hold tens of thousands (nested foreach), and serializing them
# all on every poll cost the API ~300 ms of CPU per request (bench/isolation.py cpu-foreach); page them instead.
# 100 per page: a page of 500 still cost 25 ms of the API's event loop per poll, time every other tenant's
# request arriving meanwhile waited (cpu-foreach, two runs polled twice a second: token p99 3x quiet).
STEP_PAGE = 100


# What a step record shows. Not `state` (what later steps see, never shown) and not ORM objects: plain rows
# skip the identity map and the hidden column's JSON decoding, which halved a 500-step page's cost.
SHOWN_STEP_COLUMNS = (
    StepRecord.id,
    StepRecord.step_id,
    StepRecord.path,
    StepRecord.type,
    StepRecord.attempt,
    StepRecord.status,
    StepRecord.started_at,
    StepRecord.finished_at,
    StepRecord.request,
    StepRecord.response,
    StepRecord.error,
)


async def step_records(
    session: AsyncSession, run_id: int, *, after: int | None = None, limit: int = STEP_PAGE
) -> tuple[list[Row[Any]], int | None]:
    """A page of a run's step records in execution order, and the cursor of the next page (None at the end)."""
    query = select(*SHOWN_STEP_COLUMNS).where(StepRecord.run_id == run_id)
    if after is not None:
        query = query.where(StepRecord.id > after)
    rows = list((await session.execute(query.order_by(StepRecord.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


async def flow_keys(session: AsyncSession, flow_ids: set[int]) -> dict[int, str]:
    if not flow_ids:
        return {}
    rows = await session.execute(select(Flow.id, Flow.key).where(Flow.id.in_(flow_ids)))
    return {flow_id: key for flow_id, key in rows.all()}


async def trigger_flow(session: AsyncSession, loaded: LoadedFlow, *, trigger_type: str, trigger: dict[str, Any]) -> Run:
    if not loaded.active:
        raise conflict(f"flow {loaded.flow.id} is no longer defined by the project's template", "flow_inactive")
    return await create_run(
        session, flow=loaded.flow, trigger_type=trigger_type, trigger=trigger, flow_version=loaded.template_version
    )


REPLAY_VERSIONS = ("original", "current")


async def replay_run(session: AsyncSession, original: Run, version: str = "original") -> Run:
    """A new run of the same flow with the same trigger payload, on the version the original ran
    (`original`, the default: a replay reproduces what happened) or on the project's pinned one (`current`)."""
    return await create_replay(session, original, await replay_flow(session, original, version))


async def replay_flow(session: AsyncSession, original: Run, version: str = "original") -> LoadedFlow:
    """The flow a replay of `original` runs on `version` (400/404/409 when there is none). The same for every
    run of one flow and version: a bulk replay (ihub.replays) loads it once per page."""
    if version not in REPLAY_VERSIONS:
        raise bad_request(f"version must be one of {', '.join(REPLAY_VERSIONS)}")
    loaded = await load_flow(session, original.flow_id, original.flow_version if version == "original" else None)
    if loaded is None:
        raise not_found("flow", original.flow_id)
    if loaded.spec is None:
        raise conflict(
            f"flow {loaded.flow.id} is not defined by version {loaded.template_version} of the project's template",
            "flow_inactive",
        )
    return loaded


async def create_replay(session: AsyncSession, original: Run, loaded: LoadedFlow) -> Run:
    """The replay of `original` on `loaded` (from `replay_flow`)."""
    return await create_run(
        session,
        flow=loaded.flow,
        trigger_type=original.trigger_type,
        trigger=replayed(original.trigger),
        flow_version=loaded.template_version,
        replay_of=original.id,
    )


async def cancel_run(session: AsyncSession, run: Run) -> Run:
    """Queued runs are cancelled at once; a running one stops before its next step (the engine sees the flag)."""
    if run.status in TERMINAL_RUN_STATUSES:
        raise conflict(f"run {run.id} is already {run.status}", "run_finished")
    # Finished meanwhile (TOO_LATE): the refreshed run shows how it ended, as if it had been read a moment later.
    if await lifecycle.cancel(session, run.id) is lifecycle.Cancellation.CANCELLED:
        # No execution ends this run, so no engine counts it: counted here once the cancel is committed.
        flow_key = (await flow_keys(session, {run.flow_id})).get(run.flow_id, "")
        after_commit(session, partial(metrics.run_finished, flow_key, RunStatus.CANCELLED.value))
    await session.refresh(run)
    return run


def unstorable_number(body: Any) -> str | None:
    reason = unstorable(body)
    return f"body holds {reason}" if reason is not None else None


def json_text(text: str) -> Any:
    """A JSON body typed into a form (the console's Run now): an empty text is `{}`."""
    if not text.strip():
        return {}
    try:
        return refuse_nul(json.loads(text))
    except (ValueError, RecursionError) as error:
        raise ApiError(400, f"body is not valid JSON: {json_error_text(error)}", "invalid_json") from None


async def run_now(
    session: AsyncSession,
    context: AppContext,
    principal: Principal,
    loaded: LoadedFlow,
    body: Any,
    *,
    content_type: str = "application/json",
) -> Run:
    """Trigger a flow (from `visible_flow`) by hand with `body`, which becomes `trigger.body`; the executor
    hears of the run once the caller's unit of work commits."""
    problem = payload_depth_error(body) or unstorable_number(body)
    if problem is not None:
        raise ApiError(400, problem, "invalid_request")
    trigger = ManualTrigger.payload(body, content_type=content_type, user_id=str(principal.user_id))
    run = await trigger_flow(session, loaded, trigger_type="manual", trigger=trigger)
    after_commit(session, partial(dispatch, context, run.id))
    return run


async def replay_and_dispatch(session: AsyncSession, context: AppContext, original: Run, version: str) -> Run:
    run = await replay_run(session, original, version)
    # The executor reads the run from the database: tell it once the request's unit of work has committed.
    after_commit(session, partial(dispatch, context, run.id))
    return run
