"""Projects: the console's landing page (an organization's projects), the wizard that makes one from a template
and fills in its connections, and a project's page (flows, connections, settings, template version, delete).

Connection forms are generated from the connection types as `/api/v1/connection/types` describes them. Secret
fields are write-only: the page only says a secret is "set", its input stays empty, and an empty input keeps
the stored value (the API's merge: a field not sent is kept, `null` clears it).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from ihub.common.body import validate_as
from ihub.common.context import Context, Session, received
from ihub.common.errors import ApiError
from ihub.common.ids import path_id
from ihub.console.auth import Acting, SignedIn, Viewer
from ihub.console.forms import (
    DescriptionField,
    FieldError,
    NameField,
    as_yaml,
    errors_by_field,
    field_errors,
    form_errors,
    parse_document,
)
from ihub.console.shell import load_shell
from ihub.console.web import CONTENT_SECURITY_POLICY, redirect, render
from ihub.oauth import service as oauth
from ihub.projects import health
from ihub.projects import service as projects
from ihub.projects.schemas import ConnectionOut, ProjectCreate, ProjectOut, ProjectUpdate, ProjectUpgrade
from ihub.runs import service as runs
from ihub.templates import connection_types
from ihub.templates import service as templates

router = APIRouter()

# The project page shows its newest runs; the runs page has the rest, with filters.
RECENT_RUNS = 5

INPUT_TYPES = {"string": "text", "url": "url", "email": "email"}
ENTRY_PATH = re.compile(r"^connections\[(\d+)\](?:\.details)?\.([A-Za-z0-9_]+)")


# -- connection forms ------------------------------------------------------------------------------


def connection_forms(view: ProjectOut) -> list[dict[str, Any]]:
    """One form description per connection slot: its status and each field of its type (as the API describes
    them), with the current non-secret value and whether a secret is set. Secret values are never here."""
    described = {entry["type"]: entry for entry in connection_types.describe()}
    forms = []
    for slot, status in zip(view.template_connections, view.connections, strict=True):
        kind = described[slot.type]
        fields = []
        for field in kind["fields"]:
            if field["obtained"]:
                continue  # tokens Connect obtains: never a form input (the Connect button below gets them)
            requires = "; ".join(
                f"{choice} needs {', '.join(names)}" for choice, names in (field["requires"] or {}).items()
            )
            fields.append(
                {
                    **field,
                    "key": f"{slot.id}.{field['name']}",
                    "id": f"conn-{slot.id}-{field['name']}",
                    "input": INPUT_TYPES.get(field["kind"], "text"),
                    "needed": field["required"] or field["name"] in slot.fields,
                    "missing": field["name"] in status.missing,
                    "value": _shown_value(status, field),
                    "is_set": field["name"] in (status.secrets_set if field["secret"] else status.config),
                    "requires_text": requires,
                }
            )
        one_of = [" or ".join(group) for group in kind["oneOf"]]
        forms.append(
            {
                "slot": slot,
                "status": status,
                "description": kind["description"],
                "fields": fields,
                "one_of": one_of,
                "oauth": kind["oauthProvider"],
                "connected": "accessToken" in status.secrets_set,
            }
        )
    return forms


def _shown_value(status: ConnectionOut, field: dict[str, Any]) -> str:
    if field["secret"]:
        return ""
    value = status.config.get(field["name"])
    if value is None:
        return ""
    return as_yaml(value).strip() if field["kind"] == "headers" else str(value)


def connection_entries(form: FormData, view: ProjectOut) -> tuple[list[dict[str, Any]], list[str]]:
    """The `connections` of a PUT /api/v1/project body from the posted fields of the slots present in the form,
    and the slot id of each entry (to place an error at its field). Non-secret: a value sets it, an emptied
    field that was set clears it. Secret: a value replaces it, an empty input keeps it, its "clear" box clears it."""
    described = {entry["type"]: entry for entry in connection_types.describe()}
    entries: list[dict[str, Any]] = []
    order: list[str] = []
    for slot, status in zip(view.template_connections, view.connections, strict=True):
        values: dict[str, Any] = {}
        present = False
        for field in described[slot.type]["fields"]:
            key = f"{slot.id}.{field['name']}"
            raw = form.get(key)
            if not isinstance(raw, str):
                continue
            present = True
            raw = raw.strip()
            name = field["name"]
            if field["secret"]:
                if form.get(f"{key}.clear") == "yes":
                    values[name] = None
                elif raw:
                    values[name] = raw
            elif raw:
                values[name] = parse_document(raw, key) if field["kind"] == "headers" else raw
            elif name in status.config:
                values[name] = None
        if present and values:
            entries.append({"id": slot.id, **values})
            order.append(slot.id)
    return entries, order


def place_errors(error: ApiError, order: list[str], fields: tuple[str, ...]) -> list[FieldError]:
    """Errors of a project form at their input: `connections[0].siteUrl` → the `siteUrl` input of the first
    posted slot (`jira.siteUrl`); other paths at their top-level field or above the form."""
    placed = []
    for item in field_errors(error, fields):
        found = ENTRY_PATH.match(item.path)
        if found and int(found.group(1)) < len(order):
            key = f"{order[int(found.group(1))]}.{found.group(2)}"
            placed.append(FieldError(key, key, item.message))
        else:
            placed.append(item)
    return placed


def typed_values(form: FormData | None) -> dict[str, str]:
    """What was typed into non-secret inputs, to show again after an error (secret inputs are never echoed)."""
    if form is None:
        return {}
    return {key: value for key, value in form.items() if isinstance(value, str) and key not in ("csrf",)}


# -- list --------------------------------------------------------------------------------------------


@router.get("/org/{org_id}/projects")
async def list_projects(request: Request, org_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "projects")
    views = await projects.project_views(session, await projects.list_projects(session, viewer.principal, shell.org.id))
    available = list(await templates.templates_for_org(session, viewer.principal, shell.org.id))
    return render(
        request,
        "projects.html",
        **shell.context(),
        projects=views,
        templates={t.id: t for t in available},
        template_count=len(available),
        needs_setup=sum(1 for v in views if not all(c.configured for c in v.connections)),
    )


# -- wizard ------------------------------------------------------------------------------------------


async def new_project_page(
    request: Request,
    session: AsyncSession,
    viewer: Viewer,
    org_id: int,
    values: dict[str, str],
    error: ApiError | None = None,
) -> HTMLResponse:
    shell = await load_shell(session, viewer, org_id, "projects")
    available = list(await templates.templates_for_org(session, viewer.principal, shell.org.id))
    errors = field_errors(error, ("name", "description", "templateId")) if error else []
    return render(
        request,
        "project_new.html",
        status_code=error.status if error else 200,
        **shell.context(),
        templates=available,
        values=values,
        errors=errors,
        errors_at=errors_by_field(errors),
    )


@router.get("/org/{org_id}/projects/new")
async def new_project(
    request: Request, org_id: str, viewer: SignedIn, session: Session, template: str = ""
) -> HTMLResponse:
    values = {"name": "", "description": "", "templateId": template}
    return await new_project_page(request, session, viewer, path_id(org_id, "organization"), values)


@router.post("/org/{org_id}/projects")
async def create_project(
    request: Request,
    org_id: str,
    viewer: Acting,
    session: Session,
    name: NameField = "",
    description: DescriptionField = "",
    template: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Step 1: the project is created at once (so step 2 is an ordinary page of it, and reloading loses nothing)."""
    org = path_id(org_id, "organization")
    values = {"name": name, "description": description, "templateId": template}
    async with form_errors(session) as attempt:
        body = validate_as(ProjectCreate, values)
        project = await projects.create_project(session, viewer.principal, org, body)
    if attempt.error:
        return await new_project_page(request, session, viewer, org, values, attempt.error)
    (view,) = await projects.project_views(session, [project])
    if not view.template_connections:
        return redirect(request, f"/console/project/{project.id}", f"Project {project.name} created.")
    return redirect(request, f"/console/project/{project.id}/setup", f"Project {project.name} created: now connect it.")


async def setup_page(
    request: Request,
    session: AsyncSession,
    viewer: Viewer,
    project_id: int,
    *,
    error: ApiError | None = None,
    order: list[str] | None = None,
    form: FormData | None = None,
) -> HTMLResponse:
    project = await projects.visible_project(session, viewer.principal, project_id)
    (view,) = await projects.project_views(session, [project])
    shell = await load_shell(session, viewer, project.org_id, "projects")
    template = await templates.readable_template(session, viewer.principal, project.template_id)
    errors = place_errors(error, order or [], ("settings",)) if error else []
    typed = typed_values(form)
    return render(
        request,
        "project_setup.html",
        status_code=error.status if error else 200,
        **shell.context(),
        project=view,
        tpl=template,
        forms=connection_forms(view),
        settings_text=typed.get("settings", as_yaml(view.settings)),
        typed=typed,
        errors=errors,
        errors_at=errors_by_field(errors),
    )


@router.get("/project/{project_id}/setup")
async def project_setup(request: Request, project_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    return await setup_page(request, session, viewer, path_id(project_id, "project"))


def settings_value(text: str) -> Any:
    """The settings textarea: empty means no settings ({}), else a YAML or JSON object."""
    return parse_document(text, "settings") if text.strip() else {}


@router.post("/project/{project_id}/setup")
async def save_setup(request: Request, project_id: str, viewer: Acting, session: Session, context: Context) -> Response:
    """Step 2: settings and every connection slot in one save, checked as a whole before anything is stored."""
    pid = path_id(project_id, "project")
    await received(request)
    form = await request.form()
    order: list[str] = []
    async with form_errors(session) as attempt:
        project = await projects.visible_project(session, viewer.principal, pid)
        (view,) = await projects.project_views(session, [project])
        entries, order = connection_entries(form, view)
        change: dict[str, Any] = {"connections": entries}
        settings = form.get("settings")
        if isinstance(settings, str):
            change["settings"] = settings_value(settings)
        body = validate_as(ProjectUpdate, change)
        project = await projects.update_project(session, context.box, viewer.principal, pid, body)
    if attempt.error:
        return await setup_page(request, session, viewer, pid, error=attempt.error, order=order, form=form)
    return redirect(request, f"/console/project/{project.id}", f"Project {project.name} saved.")


# -- project page --------------------------------------------------------------------------------------


async def project_page(
    request: Request,
    session: AsyncSession,
    viewer: Viewer,
    project_id: int,
    *,
    error: ApiError | None = None,
    order: list[str] | None = None,
    form: FormData | None = None,
) -> HTMLResponse:
    project = await projects.visible_project(session, viewer.principal, project_id)
    (view,) = await projects.project_views(session, [project])
    shell = await load_shell(session, viewer, project.org_id, "projects")
    template = await templates.readable_template(session, viewer.principal, project.template_id)
    versions = list(await templates.list_versions(session, viewer.principal, template.id))
    errors = place_errors(error, order or [], ("settings", "name", "description", "version")) if error else []
    typed = typed_values(form)
    latest = await runs.page_runs(session, runs.RunFilter(), project_id=project.id, limit=RECENT_RUNS)
    page = render(
        request,
        "project.html",
        recent_runs=latest.runs,
        run_flow_keys=await runs.flow_keys(session, {run.flow_id for run in latest.runs}),
        status_code=error.status if error else 200,
        **shell.context(),
        project=view,
        tpl=template,
        versions=list(reversed(versions)),
        forms=connection_forms(view),
        settings_text=typed.get("settings", as_yaml(view.settings)),
        typed=typed,
        errors=errors,
        errors_at=errors_by_field(errors),
        open_slot=form.get("slot") if form is not None else None,
    )
    providers = {slot.type for slot in view.template_connections}
    origins = await oauth.authorize_origins(session, project.org_id, providers)
    if origins:
        # Connect posts here and is answered 303 to the provider: browsers hold that redirect to the page's
        # form-action, so the page allows exactly the authorize origins of its own OAuth apps.
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
            "form-action 'self'", "form-action 'self' " + " ".join(origins)
        )
    return page


@router.get("/project/{project_id}")
async def show_project(request: Request, project_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    return await project_page(request, session, viewer, path_id(project_id, "project"))


async def _update(
    request: Request, session: AsyncSession, context: Any, viewer: Viewer, project_id: str, what: str
) -> Response:
    """One of the project page's forms (`what`: connections, settings, details) as a PUT /api/v1/project body;
    an input error shows the page again with the message at its field and what was typed."""
    pid = path_id(project_id, "project")
    await received(request)
    form = await request.form()
    order: list[str] = []
    async with form_errors(session) as attempt:
        project = await projects.visible_project(session, viewer.principal, pid)
        change: dict[str, Any] = {}
        if what == "connections":
            (view,) = await projects.project_views(session, [project])
            change["connections"], order = connection_entries(form, view)
        elif what == "settings":
            text = form.get("settings")
            change["settings"] = settings_value(text if isinstance(text, str) else "")
        else:
            change = {key: form.get(key) for key in ("name", "description") if isinstance(form.get(key), str)}
        body = validate_as(ProjectUpdate, change)
        project = await projects.update_project(session, context.box, viewer.principal, pid, body)
    if attempt.error:
        return await project_page(request, session, viewer, pid, error=attempt.error, order=order, form=form)
    messages = {"connections": "Connection saved.", "settings": "Settings saved.", "details": "Project saved."}
    return redirect(request, f"/console/project/{project.id}", messages[what])


@router.post("/project/{project_id}/connections")
async def save_connection(
    request: Request, project_id: str, viewer: Acting, session: Session, context: Context
) -> Response:
    return await _update(request, session, context, viewer, project_id, "connections")


@router.post("/project/{project_id}/connections/{slot_id}/test")
async def test_connection(
    request: Request, project_id: str, slot_id: str, viewer: Acting, session: Session, context: Context
) -> Response:
    """The Test button of a slot: POST /api/v1/project/{id}/connection/{slot}/test, its outcome as a message."""
    pid = path_id(project_id, "project")
    await received(request)
    async with form_errors(session) as attempt:
        project = await health.test_connection(session, context, viewer.principal, pid, slot_id)
        (view,) = await projects.project_views(session, [project])
        tested = next(c for c in view.connections if c.id == slot_id)
    if attempt.error:
        return redirect(request, f"/console/project/{pid}#slot-{slot_id}", attempt.error.message, error=True)
    outcome = f"{tested.name}: {tested.status.replace('_', ' ')}"
    if tested.status_message:
        outcome += f" ({tested.status_message})"
    return redirect(request, f"/console/project/{pid}#slot-{slot_id}", outcome, error=tested.status != "connected")


@router.post("/project/{project_id}/settings")
async def save_settings(
    request: Request, project_id: str, viewer: Acting, session: Session, context: Context
) -> Response:
    return await _update(request, session, context, viewer, project_id, "settings")


@router.post("/project/{project_id}/details")
async def save_details(
    request: Request, project_id: str, viewer: Acting, session: Session, context: Context
) -> Response:
    return await _update(request, session, context, viewer, project_id, "details")


@router.post("/project/{project_id}/upgrade")
async def upgrade_project(
    request: Request,
    project_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    version: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    body = validate_as(ProjectUpgrade, {"version": version} if version else {})
    project = await projects.upgrade_and_refresh(
        session, context, viewer.principal, path_id(project_id, "project"), body.version
    )
    return redirect(
        request, f"/console/project/{project.id}", f"Project now uses template version {project.template_version}."
    )


@router.post("/project/{project_id}/connection/{slot}/connect")
async def connect(
    request: Request, project_id: str, slot: str, viewer: Acting, session: Session, context: Context
) -> Response:
    """Connect / Reconnect: the same authorization as POST /api/v1/.../authorize, then the browser goes to the
    provider (303), which brings the person back to /oauth/callback and from there to this page."""
    pid = path_id(project_id, "project")
    public_url = context.settings.public_url.rstrip("/")
    try:
        url = await oauth.authorize(
            session,
            context.box,
            viewer.principal,
            pid,
            slot,
            public_url=public_url,
            ttl=timedelta(minutes=context.settings.oauth_state_ttl_minutes),
            return_url=f"{public_url}/console/project/{pid}",
        )
    except ApiError as error:
        if error.status == 404:
            raise
        return redirect(request, f"/console/project/{pid}", error.message, error=True)
    return redirect(request, url)


@router.post("/project/{project_id}/delete")
async def delete_project(request: Request, project_id: str, viewer: Acting, session: Session) -> Response:
    view = await projects.delete_project(session, viewer.principal, path_id(project_id, "project"))
    return redirect(request, f"/console/org/{view.org_id}/projects", f"Project {view.name} deleted.")
