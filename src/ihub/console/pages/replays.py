"""Bulk replay in the console: the organization's batches, a new one (its dry run first, then Start), and a
batch's progress with Pause / Resume / Cancel.

`/console/org/{id}/replays/new?failureKey=<key>` is where the failure inbox sends a person who fixed the cause of
a failure group: the page shows at once how many runs it would replay, which ones it skips and why, and the
first runs, before anything is started. The selection travels in the query string (GET), so a dry run is a URL
to keep or share; Start posts the same fields with the version and the rate. The services are the API's
(ihub.replays.service) with the signed-in person's Principal: the same subtree and role rules apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ihub.common.context import Context, Session
from ihub.common.errors import ApiError, bad_request
from ihub.common.ids import path_id
from ihub.console.auth import Acting, SignedIn
from ihub.console.pages.runs import REFRESH_SECONDS, parse_time
from ihub.console.shell import load_shell
from ihub.console.web import redirect, render
from ihub.replays import service
from ihub.replays.schemas import STATUSES, batch_out
from ihub.replays.service import ACTIVE, DEFAULT_RATE, Selection
from ihub.runs.schemas import parse_flow
from ihub.runs.service import REPLAY_VERSIONS, flows_in
from ihub.tenancy.permissions import require_admin

router = APIRouter()

FAILURE_KEY_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Chosen:
    """The selection's fields as typed (for the forms) and as the service reads them."""

    failure_key: str
    flow: str
    since: str
    until: str
    status: str

    @property
    def given(self) -> bool:
        return bool(self.failure_key or self.flow or self.since or self.until)

    def query(self) -> str:
        values = {
            "failureKey": self.failure_key,
            "flow": self.flow,
            "since": self.since,
            "until": self.until,
            "status": self.status,
        }
        return urlencode({name: value for name, value in values.items() if value})

    def selection(self) -> Selection:
        key = self.failure_key.strip().lower()
        if key and (len(key) > 32 or not set(key) <= FAILURE_KEY_CHARS):
            raise bad_request("the failure key is the group's key from the failure inbox (up to 32 hex digits)")
        status = self.status or "failed"
        if status not in STATUSES:
            raise bad_request(f"status must be one of {', '.join(STATUSES)}")
        return Selection(
            failure_key=key or None,
            flow=parse_flow(self.flow.strip() or None),
            since=parse_time(self.since, "From"),
            until=parse_time(self.until, "Until"),
            status=status,
        )


def chosen_query(
    failureKey: str = "",  # noqa: N803 - the query parameter's name, as the API and the inbox spell it
    flow: str = "",
    since: str = "",
    until: str = "",
    status: str = "",
) -> Chosen:
    return Chosen(failureKey[:64], flow[:100], since[:40], until[:40], status[:20])


def chosen_form(
    failure_key: Annotated[str, Form(alias="failureKey", max_length=64)] = "",
    flow: Annotated[str, Form(max_length=100)] = "",
    since: Annotated[str, Form(max_length=40)] = "",
    until: Annotated[str, Form(max_length=40)] = "",
    status: Annotated[str, Form(max_length=20)] = "",
) -> Chosen:
    return Chosen(failure_key, flow, since, until, status)


@router.get("/org/{org_id}/replays")
async def list_replays(request: Request, org_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "replays")
    batches, _more = await service.list_batches(session, shell.org.path, limit=100)
    return render(
        request,
        "replays.html",
        **shell.context(),
        batches=[batch_out(b) for b in batches],
        refresh=REFRESH_SECONDS if any(b.status in ACTIVE for b in batches) else None,
    )


@router.get("/orgs/{org_id}/replays/new")
async def new_replay_alias(request: Request, org_id: str) -> RedirectResponse:
    """The plural spelling some links use: the same page."""
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/console/org/{path_id(org_id, 'organization')}/replays/new{query}", status_code=307)


@router.get("/org/{org_id}/replays/new")
async def new_replay(
    request: Request,
    org_id: str,
    viewer: SignedIn,
    session: Session,
    context: Context,
    chosen: Annotated[Chosen, Depends(chosen_query)],
) -> HTMLResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "replays")
    preview, refusal = None, None
    if chosen.given:
        try:
            preview = await service.preview(
                session, shell.org.path, chosen.selection(), max_runs=context.settings.replay_max_runs
            )
        except ApiError as error:
            if error.code != "selection_too_large":
                raise
            refusal = error.message  # shown beside the form, which the person narrows
    return render(
        request,
        "replay_new.html",
        **shell.context(),
        chosen=chosen,
        preview=preview,
        refusal=refusal,
        flows=await flows_in(session, org_path=shell.org.path),
        statuses=STATUSES,
        versions=REPLAY_VERSIONS,
        rate=DEFAULT_RATE,
        max_rate=context.settings.replay_max_rate,
        can_start=viewer.is_admin,
    )


@router.post("/org/{org_id}/replays")
async def start_replay(
    request: Request,
    org_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    chosen: Annotated[Chosen, Depends(chosen_form)],
    version: Annotated[str, Form(max_length=20)] = "original",
    rate: Annotated[str, Form(max_length=10)] = str(DEFAULT_RATE),
) -> Response:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "replays")
    require_admin(viewer.principal, "start a bulk replay")
    # isascii too: str.isdigit() accepts "²", which int() refuses.
    if not (rate.strip().isascii() and rate.strip().isdigit()):
        raise bad_request("rate must be a whole number of replays per second")
    batch = await service.start(
        session,
        context.settings,
        org_id=shell.org.id,
        org_path=shell.org.path,
        selection=chosen.selection(),
        version=version,
        rate=int(rate),
        created_by=viewer.user_id,
    )
    worker = getattr(request.app.state, "replay_worker", None)
    if worker is not None:
        from ihub.db.unit_of_work import after_commit

        after_commit(session, worker.wake)
    message = f"Bulk replay {batch.id} started: {batch.selected} runs selected."
    if batch.status == "done":
        message = f"Bulk replay {batch.id} selected no runs: nothing to replay."
    return redirect(request, f"/console/replay/{batch.id}", message)


@router.get("/replay/{replay_id}")
async def show_replay(request: Request, replay_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    batch = await service.visible_batch(session, viewer.principal, path_id(replay_id, "replay"))
    shell = await load_shell(session, viewer, batch.org_id, "replays")
    shown = batch_out(batch, await service.items(session, batch.id))
    handled = shown.replayed + shown.skipped + shown.failed
    return render(
        request,
        "replay.html",
        **shell.context(),
        batch=shown,
        percent=int(100 * handled / shown.selected) if shown.selected else 100,
        selection=_described(batch.selection),
        can_change=viewer.is_admin,
        refresh=REFRESH_SECONDS if batch.status in ACTIVE and batch.status != "paused" else None,
    )


def _described(selection: dict[str, Any]) -> list[tuple[str, str]]:
    labels = {"failureKey": "Failure group", "flow": "Flow", "since": "From", "until": "Until", "status": "Status"}
    return [(labels[name], str(value)) for name, value in selection.items() if value and name in labels]


@router.post("/replay/{replay_id}/{action}")
async def change_replay(request: Request, replay_id: str, action: str, viewer: Acting, session: Session) -> Response:
    changes = {"pause": service.pause, "resume": service.resume, "cancel": service.cancel}
    batch = await service.visible_batch(session, viewer.principal, path_id(replay_id, "replay"))
    if action not in changes:
        raise bad_request("the action is pause, resume or cancel")
    require_admin(viewer.principal, f"{action} a bulk replay")
    batch = await changes[action](session, batch)
    if action == "resume":
        worker = getattr(request.app.state, "replay_worker", None)
        if worker is not None:
            from ihub.db.unit_of_work import after_commit

            after_commit(session, worker.wake)
    return redirect(request, f"/console/replay/{batch.id}", f"Bulk replay {batch.id} is {batch.status}.")
