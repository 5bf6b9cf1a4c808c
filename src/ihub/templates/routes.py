"""`/api/v1/template` and `/api/v1/org/{orgId}/templates` routes."""

from __future__ import annotations

from fastapi import APIRouter

from ihub.common.body import json_or_form, request_body
from ihub.common.context import Session
from ihub.common.ids import path_id
from ihub.common.responses import errors
from ihub.provisioning.deps import Caller
from ihub.templates import service
from ihub.templates.models import Template, TemplateVersion
from ihub.templates.schemas import (
    EXAMPLE_DEFINITION,
    SlotOut,
    TemplateCreate,
    TemplateList,
    TemplateOut,
    TemplateUpdate,
    VersionDetail,
    VersionList,
    VersionOne,
    VersionOut,
)

router = APIRouter(prefix="/api/v1", tags=["templates"], responses=errors(400, 401, 403, 404))


def template_out(template: Template) -> TemplateOut:
    return TemplateOut(
        id=template.id,
        org_id=template.org_id,
        name=template.name,
        description=template.description or "",
        version=template.version,
        definition=template.definition,
        connections=[SlotOut.model_validate(slot) for slot in service.slots_of(template)],
        flows=service.flows_of(template),
        created_at=template.created_at,
        updated_at=template.updated_at,
    )


def template_list(*templates: Template) -> TemplateList:
    return TemplateList(templates=[template_out(t) for t in templates])


@router.post(
    "/template/org/{org_id}",
    response_model=TemplateList,
    responses=errors(409),
    openapi_extra=request_body(
        TemplateCreate,
        example={"name": "ServiceNow to Jira", "description": "Tickets to issues", "definition": EXAMPLE_DEFINITION},
    ),
)
async def create_template(
    org_id: str, caller: Caller, session: Session, body: TemplateCreate = json_or_form(TemplateCreate)
) -> TemplateList:
    """Create a template in an organization of your subtree (Owners and Admins)."""
    template = await service.create_template(
        session, caller, path_id(org_id, "organization"), body.name, body.description, body.definition
    )
    return template_list(template)


@router.get("/org/{org_id}/templates", response_model=TemplateList)
async def list_templates(org_id: str, caller: Caller, session: Session) -> TemplateList:
    """The organization's templates and those it inherits from its ancestors (nearest first)."""
    return template_list(*await service.templates_for_org(session, caller, path_id(org_id, "organization")))


@router.get("/template/{template_id}", response_model=TemplateList)
async def get_template(template_id: str, caller: Caller, session: Session) -> TemplateList:
    """A template of your subtree or inherited from one of your organization's ancestors."""
    return template_list(await service.readable_template(session, caller, path_id(template_id, "template")))


@router.put(
    "/template/{template_id}",
    response_model=TemplateList,
    responses=errors(409),
    openapi_extra=request_body(TemplateUpdate, example={"description": "Tickets to issues, v2"}),
)
async def update_template(
    template_id: str, caller: Caller, session: Session, body: TemplateUpdate = json_or_form(TemplateUpdate)
) -> TemplateList:
    """Change a template (Owners and Admins, inside your subtree): every change is stored as a new immutable
    version (the version goes up by one). Projects made from it stay on their pinned version until upgraded
    (`POST /api/v1/project/{id}/upgrade`)."""
    template = await service.update_template(
        session, caller, path_id(template_id, "template"), body.name, body.description, body.definition
    )
    return template_list(template)


def version_out(version: TemplateVersion) -> VersionOut:
    return VersionOut(
        version=version.version,
        created_at=version.created_at,
        created_by=version.created_by,
        flows=service.definition_flow_keys(version.definition),
    )


@router.get("/template/{template_id}/versions", response_model=VersionList)
async def list_template_versions(template_id: str, caller: Caller, session: Session) -> VersionList:
    """Every stored version of a template, oldest first (whoever may read the template)."""
    tid = path_id(template_id, "template")
    versions = await service.list_versions(session, caller, tid)
    return VersionList(
        template_id=tid,
        latest=max((v.version for v in versions), default=0),
        versions=[version_out(v) for v in versions],
    )


@router.get("/template/{template_id}/versions/{version}", response_model=VersionOne)
async def get_template_version(template_id: str, version: str, caller: Caller, session: Session) -> VersionOne:
    """One stored version with its definition (404 when the template has no such version)."""
    tid = path_id(template_id, "template")
    found = await service.readable_version(session, caller, tid, path_id(version, "version"))
    return VersionOne(
        template_id=tid,
        versions=[VersionDetail(**version_out(found).model_dump(), definition=found.definition)],
    )


@router.delete("/template/{template_id}", response_model=TemplateList, responses=errors(409))
async def delete_template(template_id: str, caller: Caller, session: Session) -> TemplateList:
    """Delete a template no project uses (409 otherwise)."""
    return template_list(await service.delete_template(session, caller, path_id(template_id, "template")))
