"""`/api/v1/project` routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ihub.common.body import json_or_form, request_body
from ihub.common.context import Context, Session
from ihub.common.ids import path_id
from ihub.common.responses import errors
from ihub.projects import health, service
from ihub.projects.schemas import ConnectionList, ProjectCreate, ProjectList, ProjectUpdate, ProjectUpgrade
from ihub.provisioning.deps import Caller
from ihub.templates import connection_types

router = APIRouter(prefix="/api/v1", tags=["projects"], responses=errors(400, 401, 403, 404))


@router.post(
    "/project/org/{org_id}",
    response_model=ProjectList,
    responses=errors(409),
    openapi_extra=request_body(
        ProjectCreate, example={"name": "Best Project Ever", "description": "Tickets to Jira", "templateId": "3"}
    ),
)
async def create_project(
    org_id: str, caller: Caller, session: Session, body: ProjectCreate = json_or_form(ProjectCreate)
) -> ProjectList:
    """Create a project from a template of the organization or one of its ancestors (any role)."""
    project = await service.create_project(session, caller, path_id(org_id, "organization"), body)
    return ProjectList(projects=await service.project_views(session, [project]))


@router.get("/project/org/{org_id}", response_model=ProjectList)
async def list_projects(org_id: str, caller: Caller, session: Session) -> ProjectList:
    projects = await service.list_projects(session, caller, path_id(org_id, "organization"))
    return ProjectList(projects=await service.project_views(session, projects))


@router.get("/project/{project_id}", response_model=ProjectList)
async def get_project(project_id: str, caller: Caller, session: Session) -> ProjectList:
    project = await service.visible_project(session, caller, path_id(project_id, "project"))
    return ProjectList(projects=await service.project_views(session, [project]))


@router.put(
    "/project/{project_id}",
    response_model=ProjectList,
    responses=errors(409),
    openapi_extra=request_body(
        ProjectUpdate,
        example={
            "connections": [
                {
                    "id": "jira",
                    "details": {
                        "type": "jira",
                        "siteUrl": "https://acme.atlassian.net",
                        "email": "bot@acme.com",
                        "apiToken": "<api token>",
                    },
                }
            ]
        },
    ),
)
async def update_project(
    project_id: str,
    caller: Caller,
    context: Context,
    session: Session,
    body: ProjectUpdate = json_or_form(ProjectUpdate),
) -> ProjectList:
    """Rename, set settings, or fill in connections. Secrets are stored encrypted and never returned:
    each connection says which fields are set (`secretsSet`) and which required ones are `missing`."""
    project = await service.update_project(session, context.box, caller, path_id(project_id, "project"), body)
    return ProjectList(projects=await service.project_views(session, [project]))


@router.post(
    "/project/{project_id}/upgrade",
    response_model=ProjectList,
    openapi_extra=request_body(ProjectUpgrade, example={"version": 2}, required=False),
)
async def upgrade_project(
    project_id: str,
    caller: Caller,
    context: Context,
    session: Session,
    body: ProjectUpgrade = json_or_form(ProjectUpgrade),
) -> ProjectList:
    """Pin the project to another version of its template (the latest when `version` is omitted; a lower one
    is a rollback). Its flows and connections follow that version; runs already started keep theirs."""
    project = await service.upgrade_and_refresh(session, context, caller, path_id(project_id, "project"), body.version)
    return ProjectList(projects=await service.project_views(session, [project]))


@router.delete("/project/{project_id}", response_model=ProjectList)
async def delete_project(project_id: str, caller: Caller, session: Session) -> ProjectList:
    """Delete a project with its connections, flows and runs."""
    return ProjectList(projects=[await service.delete_project(session, caller, path_id(project_id, "project"))])


@router.post("/project/{project_id}/connection/{slot_id}/test", response_model=ConnectionList)
async def test_connection(
    project_id: str, slot_id: str, caller: Caller, context: Context, session: Session
) -> ConnectionList:
    """Check a connection now with its type's probe request (Jira `GET /rest/api/3/myself`, ...) and record
    the outcome as its `status`: 2xx connected, 401/403 or no answer error (with the provider's message),
    needs_reconnect when only a person can fix it. Whoever may edit the project may."""
    project = await health.test_connection(session, context, caller, path_id(project_id, "project"), slot_id)
    (view,) = await service.project_views(session, [project])
    return ConnectionList(connections=[c for c in view.connections if c.id == slot_id])


@router.get("/connection/types", tags=["projects"])
async def connection_types_list(caller: Caller) -> dict[str, list[dict[str, Any]]]:
    """The connection types a template slot may declare, with every field (see docs/connections.md)."""
    return {"connectionTypes": connection_types.describe()}
