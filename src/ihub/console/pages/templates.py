"""Templates: the templates an organization can use (its own and those inherited from its ancestors), one
template with its connection slots, flows and versions; create, edit, import and delete (Owners and Admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.common.body import validate_as
from ihub.common.context import Session
from ihub.common.errors import ApiError
from ihub.common.ids import path_id
from ihub.console.auth import Acting, SignedIn, Viewer
from ihub.console.forms import (
    DescriptionField,
    DocumentField,
    NameField,
    as_yaml,
    errors_by_field,
    field_errors,
    form_errors,
    parse_document,
)
from ihub.console.shell import Shell, load_shell
from ihub.console.web import redirect, render
from ihub.templates import service as templates
from ihub.templates.models import Template
from ihub.templates.schemas import EXAMPLE_DEFINITION, TemplateCreate, TemplateUpdate
from ihub.tenancy import service as tenancy
from ihub.tenancy.permissions import require_admin

router = APIRouter()

FORM_FIELDS = ("name", "description", "definition")
# The ApiErrors a template form shows on itself: bad input (400) and a name already taken (409).


def flow_summary(flow: dict[str, Any]) -> dict[str, Any]:
    trigger = flow.get("trigger") or {}
    return {
        "key": flow.get("key", ""),
        "name": flow.get("name") or flow.get("key", ""),
        "trigger": trigger.get("type", "") if isinstance(trigger, dict) else "",
        "mode": flow.get("mode", "async"),
        "steps": len(flow.get("steps") or []),
    }


async def origin_names(session: AsyncSession, rows: list[Template]) -> dict[int, str]:
    """The name of each organization the templates belong to (ancestors above the viewer's subtree included:
    a template inherited from there is readable, and says where it comes from)."""
    names: dict[int, str] = {}
    for org_id in {t.org_id for t in rows}:
        org = await tenancy.get_org(session, org_id)
        names[org_id] = org.name if org else f"organization {org_id}"
    return names


@router.get("/org/{org_id}/templates")
async def list_templates(request: Request, org_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "templates")
    rows = list(await templates.templates_for_org(session, viewer.principal, shell.org.id))
    return render(
        request,
        "templates.html",
        **shell.context(),
        templates=rows,
        origins=await origin_names(session, rows),
        slots={t.id: templates.slots_of(t) for t in rows},
        flows={t.id: templates.flows_of(t) for t in rows},
        may_create=viewer.is_admin,
    )


async def template_shell(session: AsyncSession, viewer: Viewer, template: Template, org: int | None) -> Shell:
    """The shell around a template's pages: the org it was opened from, else its own org when that is in the
    viewer's subtree, else the viewer's org (an inherited template's org lies above what they may browse)."""
    for candidate in (org, template.org_id):
        if candidate is None:
            continue
        try:
            return await load_shell(session, viewer, candidate, "templates")
        except ApiError as error:
            if error.status != 404:
                raise
    return await load_shell(session, viewer, None, "templates")


@router.get("/template/{template_id}")
async def show_template(
    request: Request, template_id: str, viewer: SignedIn, session: Session, org: str | None = None
) -> HTMLResponse:
    template = await templates.readable_template(session, viewer.principal, path_id(template_id, "template"))
    shell = await template_shell(session, viewer, template, path_id(org, "organization") if org else None)
    versions = list(await templates.list_versions(session, viewer.principal, template.id))
    return render(
        request,
        "template.html",
        **shell.context(),
        tpl=template,
        origin=(await origin_names(session, [template]))[template.org_id],
        inherited=template.org_id != shell.org.id,
        slots=templates.slots_of(template),
        flows=[flow_summary(f) for f in templates.flows_of(template)],
        versions=list(reversed(versions)),
        flow_keys={v.version: templates.definition_flow_keys(v.definition) for v in versions},
        definition_yaml=as_yaml(template.definition),
        may_edit=await templates.can_write(session, viewer.principal, template),
    )


def form_page(
    request: Request,
    shell: Shell,
    *,
    template: Template | None,
    values: dict[str, str],
    error: ApiError | None = None,
) -> HTMLResponse:
    errors = field_errors(error, FORM_FIELDS) if error else []
    return render(
        request,
        "template_form.html",
        status_code=error.status if error else 200,
        **shell.context(),
        tpl=template,
        values=values,
        errors=errors,
        errors_at=errors_by_field(errors),
        example=as_yaml(EXAMPLE_DEFINITION),
    )


@router.get("/org/{org_id}/templates/new")
async def new_template(request: Request, org_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "templates")
    require_admin(viewer.principal, "create templates")
    values = {"name": "", "description": "", "definition": ""}
    return form_page(request, shell, template=None, values=values)


@router.post("/org/{org_id}/templates")
async def create_template(
    request: Request,
    org_id: str,
    viewer: Acting,
    session: Session,
    name: NameField = "",
    description: DescriptionField = "",
    definition: DocumentField = "",
) -> Response:
    org = path_id(org_id, "organization")
    values = {"name": name, "description": description, "definition": definition}
    async with form_errors(session) as attempt:
        body = validate_as(
            TemplateCreate,
            {"name": name, "description": description, "definition": parse_document(definition, "definition")},
        )
        template = await templates.create_template(
            session, viewer.principal, org, body.name, body.description, body.definition
        )
    if attempt.error:
        shell = await load_shell(session, viewer, org, "templates")
        return form_page(request, shell, template=None, values=values, error=attempt.error)
    return redirect(request, f"/console/template/{template.id}", f"Template {template.name} created (version 1).")


@router.get("/template/{template_id}/edit")
async def edit_template(request: Request, template_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    template = await templates.writable_template(
        session, viewer.principal, path_id(template_id, "template"), "change templates"
    )
    shell = await template_shell(session, viewer, template, None)
    values = {
        "name": template.name,
        "description": template.description or "",
        "definition": as_yaml(template.definition),
    }
    return form_page(request, shell, template=template, values=values)


@router.post("/template/{template_id}/edit")
async def update_template(
    request: Request,
    template_id: str,
    viewer: Acting,
    session: Session,
    name: NameField = "",
    description: DescriptionField = "",
    definition: DocumentField = "",
) -> Response:
    tid = path_id(template_id, "template")
    values = {"name": name, "description": description, "definition": definition}
    async with form_errors(session) as attempt:
        body = validate_as(
            TemplateUpdate,
            {"name": name, "description": description, "definition": parse_document(definition, "definition")},
        )
        template = await templates.update_template(
            session, viewer.principal, tid, body.name, body.description, body.definition
        )
    if attempt.error:
        current = await templates.readable_template(session, viewer.principal, tid)
        shell = await template_shell(session, viewer, current, None)
        return form_page(request, shell, template=current, values=values, error=attempt.error)
    return redirect(
        request, f"/console/template/{template.id}", f"Template {template.name} saved as version {template.version}."
    )


@router.post("/org/{org_id}/templates/import")
async def import_template(
    request: Request, org_id: str, viewer: Acting, session: Session, file: Annotated[UploadFile, File()]
) -> Response:
    """A YAML or JSON file with name, description and definition (what `ihub template import` reads): creates
    the template, or saves a new version of the org's template of that name. The app's body limit bounds it."""
    org = path_id(org_id, "organization")
    source = file.filename or "the file"
    try:
        text = (await file.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"{source}: not a UTF-8 text file", "invalid_document") from None
    try:
        document = templates.template_document(parse_document(text, source), source)
    except ValueError as error:
        raise ApiError(400, str(error), "invalid_document") from None
    body = validate_as(TemplateCreate, document)
    template, created = await templates.import_template_as(
        session, viewer.principal, org, body.name, body.description, body.definition
    )
    verb = "imported" if created else f"updated to version {template.version}"
    return redirect(request, f"/console/template/{template.id}", f"Template {template.name} {verb}.")


@router.post("/template/{template_id}/delete")
async def delete_template(request: Request, template_id: str, viewer: Acting, session: Session) -> Response:
    template = await templates.delete_template(session, viewer.principal, path_id(template_id, "template"))
    return redirect(request, f"/console/org/{template.org_id}/templates", f"Template {template.name} deleted.")
