"""A flow's trigger page: what a calling system needs (iss, sub, aud, token and webhook URLs per environment),
its client keys (generate, register, rotate, revoke), enabling the client, code samples, and Run now.

Every action calls the same `ihub.incoming.service` / `ihub.runs.service` functions as `/api/v1`; a generated
private key is rendered into the response of the POST that made it and is never stored, so a reload does not
show it again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from ihub.common.body import validate_as
from ihub.common.context import Context, Session
from ihub.common.errors import ApiError
from ihub.common.ids import path_id
from ihub.console.auth import Acting, SignedIn, Viewer
from ihub.console.forms import DocumentField
from ihub.console.shell import load_shell
from ihub.console.web import redirect, render
from ihub.incoming import service as incoming
from ihub.incoming.flowref import is_jwt_triggered
from ihub.incoming.schemas import TriggerCreate, TriggerOut
from ihub.projects.service import visible_project
from ihub.runs import service as runs

router = APIRouter()

SAMPLE_BODY = '{\n  "issueKey": "SERVICENOW-1",\n  "summary": "Ticket from the console",\n  "description": "HEJ"\n}'


def page_url(flow_id: int) -> str:
    return f"/console/flow/{flow_id}/trigger"


async def trigger_page(
    request: Request,
    session: Session,
    context: Context,
    viewer: Viewer,
    flow_id: int,
    *,
    issued: TriggerOut | None = None,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    loaded = await incoming.visible_flow(session, viewer.principal, flow_id, manage=False)
    project = await visible_project(session, viewer.principal, loaded.project_id)
    shell = await load_shell(session, viewer, loaded.org_id, "projects")
    triggers = await incoming.show_triggers(session, context, viewer.principal, loaded.flow.id)
    tokens, hooks = incoming.urls(context.settings)
    # The values the samples and the copy fields show: the client just issued, else the newest one.
    shown = issued or (triggers[-1] if triggers else None)
    return render(
        request,
        "trigger.html",
        status_code=status_code,
        **shell.context(),
        flow=loaded.flow,
        project=project,
        jwt_flow=is_jwt_triggered(loaded),
        trigger_type=loaded.spec.trigger.type if loaded.spec is not None else None,
        triggers=triggers,
        shown=shown,
        issued=issued,
        token_urls=tokens,
        webhook_urls=hooks,
        default_env=context.settings.incoming_envs[0],
        manage=viewer.is_admin,
        key_max_age_days=context.settings.trigger_key_max_age_days,
        **{"run_body": SAMPLE_BODY, "run_error": None, **extra},
    )


def _expiry(days: str) -> dict[str, Any]:
    """The form's optional "expires in days" (empty: the hub's IHUB_TRIGGER_KEY_MAX_AGE_DAYS, or no expiry)."""
    return {"expiresInDays": days.strip()} if days.strip() else {}


@router.get("/flow/{flow_id}/trigger")
async def show(request: Request, flow_id: str, viewer: SignedIn, session: Session, context: Context) -> HTMLResponse:
    return await trigger_page(request, session, context, viewer, path_id(flow_id, "flow"))


@router.post("/flow/{flow_id}/trigger/generate")
async def generate_key(
    request: Request,
    flow_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    iss: Annotated[str, Form(max_length=64)] = "",
    expires_in_days: Annotated[str, Form(max_length=5)] = "",
) -> HTMLResponse:
    """A new client with a generated key pair, or (with `iss`) a new key for that client: a rotation, the old
    key keeps working until it is revoked (or expires). The private key is in this response only."""
    data = validate_as(TriggerCreate, {"generateKey": True, "iss": iss or None, **_expiry(expires_in_days)})
    issued = await incoming.create_trigger(session, context, viewer.principal, path_id(flow_id, "flow"), data)
    return await trigger_page(request, session, context, viewer, path_id(flow_id, "flow"), issued=issued)


@router.post("/flow/{flow_id}/trigger/register")
async def register_key(
    request: Request,
    flow_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    public_key: Annotated[str, Form(max_length=16_384)] = "",
    jwks_url: Annotated[str, Form(max_length=2000)] = "",
    iss: Annotated[str, Form(max_length=64)] = "",
    expires_in_days: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    """Register a PEM public key or a JWKS URL, for a new client or (with `iss`) an existing one."""
    flow = path_id(flow_id, "flow")
    source = {"jwksUrl": jwks_url.strip()} if jwks_url.strip() else {"publicKey": public_key}
    if "jwksUrl" in source and iss:
        described = await incoming.update_trigger(
            session, context, viewer.principal, flow, iss, jwks_url=source["jwksUrl"]
        )
        return redirect(
            request, page_url(flow), f"Client {described.iss} now reads its keys from {described.jwks_url}."
        )
    expiry = _expiry(expires_in_days) if "publicKey" in source else {}
    data = validate_as(TriggerCreate, {**source, "iss": iss or None, **expiry})
    described = await incoming.create_trigger(session, context, viewer.principal, flow, data)
    what = f"key {described.kid}" if described.kid else f"JWKS URL {described.jwks_url}"
    return redirect(request, page_url(flow), f"Registered {what} for client {described.iss}.")


@router.post("/flow/{flow_id}/trigger/client/{iss}/enabled")
async def set_enabled(
    request: Request,
    flow_id: str,
    iss: str,
    viewer: Acting,
    session: Session,
    context: Context,
    enabled: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    flow = path_id(flow_id, "flow")
    on = enabled == "true"
    described = await incoming.update_trigger(session, context, viewer.principal, flow, iss, enabled=on)
    state = "enabled" if on else "disabled: its tokens stop working within 5 seconds"
    return redirect(request, page_url(flow), f"Client {described.iss} is {state}.")


@router.post("/flow/{flow_id}/trigger/client/{iss}/revoke")
async def revoke_key(
    request: Request,
    flow_id: str,
    iss: str,
    viewer: Acting,
    session: Session,
    context: Context,
    kid: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    flow = path_id(flow_id, "flow")
    await incoming.revoke_trigger_key(session, context, viewer.principal, flow, iss, kid)
    return redirect(request, page_url(flow), f"Key {kid} is revoked: assertions signed with it are refused.")


@router.post("/flow/{flow_id}/run")
async def run_now(
    request: Request,
    flow_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    body: DocumentField = "",
) -> Response:
    """Start a run with the JSON body (as POST /api/v1/flow/{id}/run); invalid JSON starts nothing."""
    flow = path_id(flow_id, "flow")
    loaded = await runs.visible_flow(session, viewer.principal, flow)
    try:
        payload = runs.json_text(body)
    except ApiError as error:
        # Back to the form with what was typed and why it is refused; nothing was started.
        return await trigger_page(
            request, session, context, viewer, flow, status_code=400, run_body=body, run_error=error.message
        )
    run = await runs.run_now(session, context, viewer.principal, loaded, payload)
    return redirect(request, f"/console/run/{run.id}", f"Run {run.id} started.")
