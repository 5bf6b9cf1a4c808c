"""`/api/v1` routes for bulk replay: dry run and start, list, progress, pause/resume/cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.body import json_or_form, request_body
from ihub.common.context import Context, Session
from ihub.common.ids import path_id
from ihub.common.responses import errors
from ihub.db.unit_of_work import after_commit
from ihub.provisioning.deps import Caller
from ihub.replays import service
from ihub.replays.models import ReplayBatch
from ihub.replays.schemas import DryRunOut, ReplayDetail, ReplayList, ReplayStart, batch_out, dry_run_out
from ihub.runs.schemas import parse_cursor
from ihub.runs.service import visible_org_path
from ihub.tenancy.permissions import Principal, require_admin

router = APIRouter(prefix="/api/v1", tags=["replays"], responses=errors(400, 401, 404))


def _wake_worker(request: Request, session: AsyncSession) -> None:
    """This process's replay worker looks for the batch once it is committed, not at its next poll."""
    worker = getattr(request.app.state, "replay_worker", None)
    if worker is not None:
        after_commit(session, worker.wake)


@router.post(
    "/org/{org_id}/replays",
    status_code=202,
    response_model=ReplayDetail | DryRunOut,
    responses=errors(403, 409),
    openapi_extra=request_body(ReplayStart, example={"failureKey": "3f2a9c0d1e2b3a4f5e6d7c8b9a0f1e2d", "dryRun": True}),
)
async def start_replay(
    org_id: str,
    request: Request,
    response: Response,
    caller: Caller,
    session: Session,
    context: Context,
    body: ReplayStart = json_or_form(ReplayStart),
) -> ReplayDetail | DryRunOut:
    """Replay the runs of a failure group (`failureKey`) or of a filter (`flow`, `since`, `until`, `status`) in
    the organization's subtree. With `"dryRun": true` (200, nothing changes): how many runs match, how many
    would be skipped (already replayed, or superseded by a replay that failed) and the first 50. Without
    (202, Owner or Admin): a batch that replays them oldest first at `rate` per second, on the `original` or
    the `current` template version; follow it with GET /replays/{id}."""
    oid = path_id(org_id, "organization")
    path = await visible_org_path(session, caller, oid)
    selection = body.selection()
    service.check_rate(body.rate, context.settings)  # a dry run refuses what the start would refuse
    if body.dry_run:
        response.status_code = 200
        # A dry run only reads, up to IHUB_REPLAY_MAX_RUNS runs three times (4 s for 100 000 on SQLite). This
        # POST's transaction holds SQLite's one write lock since its first statement (the token lookup), and
        # every tenant's writes would wait for the counting: end it (nothing was written) and count on a read
        # connection. The audit entry is written at the end, in a transaction of its own, as for every POST.
        await session.commit()
        async with context.readers() as reader:
            preview = await service.preview(reader, path, selection, max_runs=context.settings.replay_max_runs)
        return dry_run_out(preview)
    require_admin(caller, "start a bulk replay")
    batch = await service.start(
        session,
        context.settings,
        org_id=oid,
        org_path=path,
        selection=selection,
        version=body.version,
        rate=body.rate,
        created_by=caller.user_id,
    )
    _wake_worker(request, session)
    return ReplayDetail(replays=[batch_out(batch)])


@router.get("/org/{org_id}/replays", response_model=ReplayList)
async def list_replays(
    org_id: str,
    caller: Caller,
    session: Session,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page.")] = None,
) -> ReplayList:
    """The bulk replays of the organization and its sub-organizations, newest first."""
    path = await visible_org_path(session, caller, path_id(org_id, "organization"))
    batches, more = await service.list_batches(session, path, limit=limit, before=parse_cursor(cursor))
    return ReplayList(replays=[batch_out(b) for b in batches], next_cursor=str(more) if more else None)


@router.get("/replays/{replay_id}", response_model=ReplayDetail)
async def get_replay(replay_id: str, caller: Caller, session: Session) -> ReplayDetail:
    """A bulk replay's progress, with the latest 50 runs it handled (replayed, skipped or failed, and why)."""
    batch = await service.visible_batch(session, caller, path_id(replay_id, "replay"))
    return ReplayDetail(replays=[batch_out(batch, await service.items(session, batch.id))])


async def _changed(session: AsyncSession, caller: Principal, replay_id: str, action: str) -> ReplayBatch:
    batch = await service.visible_batch(session, caller, path_id(replay_id, "replay"))
    require_admin(caller, f"{action} a bulk replay")
    return batch


@router.post("/replays/{replay_id}/pause", response_model=ReplayDetail, responses=errors(403, 409))
async def pause_replay(replay_id: str, caller: Caller, session: Session) -> ReplayDetail:
    """Stop after the page being replayed (409 when it is not pending or running)."""
    batch = await service.pause(session, await _changed(session, caller, replay_id, "pause"))
    return ReplayDetail(replays=[batch_out(batch)])


@router.post("/replays/{replay_id}/resume", response_model=ReplayDetail, responses=errors(403, 409))
async def resume_replay(replay_id: str, request: Request, caller: Caller, session: Session) -> ReplayDetail:
    """Go on after the last run handled (409 when it is not paused)."""
    batch = await service.resume(session, await _changed(session, caller, replay_id, "resume"))
    _wake_worker(request, session)
    return ReplayDetail(replays=[batch_out(batch)])


@router.post("/replays/{replay_id}/cancel", response_model=ReplayDetail, responses=errors(403, 409))
async def cancel_replay(replay_id: str, caller: Caller, session: Session) -> ReplayDetail:
    """Stop for good (409 when it already ended); the replays it started stay."""
    batch = await service.cancel(session, await _changed(session, caller, replay_id, "cancel"))
    return ReplayDetail(replays=[batch_out(batch)])
