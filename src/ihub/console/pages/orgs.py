"""Admin → Organizations (Owners): create, rename, move and delete organizations of the viewer's subtree."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ihub.common.body import validate_as
from ihub.common.context import Session
from ihub.common.ids import path_id
from ihub.console.auth import Acting, SignedIn
from ihub.console.forms import NameField
from ihub.console.shell import load_shell
from ihub.console.web import redirect, render, with_security_headers
from ihub.tenancy import service as tenancy
from ihub.tenancy.schemas import OrgCreate, OrgUpdate

router = APIRouter()


@router.get("/")
async def home(viewer: SignedIn) -> Response:
    return with_security_headers(RedirectResponse(f"/console/org/{viewer.principal.org_id}/projects", status_code=303))


@router.get("/org/{org_id}/orgs")
async def organizations(request: Request, org_id: str, viewer: SignedIn, session: Session) -> HTMLResponse:
    shell = await load_shell(session, viewer, path_id(org_id, "organization"), "admin", "orgs")
    orgs = list(await tenancy.list_orgs(session, viewer.principal))
    children = [o for o in orgs if o.parent_id == shell.org.id]
    # A move target may not be the org itself or below it (the service refuses that too).
    targets = [o for o in orgs if not o.path.startswith(shell.org.path)]
    return render(
        request, "orgs.html", **shell.context(), tab="orgs", children=children, targets=targets, all_orgs=orgs
    )


@router.post("/org/{org_id}/orgs")
async def create_org(request: Request, org_id: str, viewer: Acting, session: Session, name: NameField = "") -> Response:
    parent = path_id(org_id, "organization")
    org = await tenancy.create_org(
        session, viewer.principal, validate_as(OrgCreate, {"name": name, "parentId": parent})
    )
    return redirect(request, f"/console/org/{org.id}/orgs", f"Organization {org.name} created.")


@router.post("/org/{org_id}/rename")
async def rename_org(request: Request, org_id: str, viewer: Acting, session: Session, name: NameField = "") -> Response:
    org = await tenancy.update_org(
        session, viewer.principal, path_id(org_id, "organization"), validate_as(OrgUpdate, {"name": name})
    )
    return redirect(request, f"/console/org/{org.id}/orgs", f"Renamed to {org.name}.")


@router.post("/org/{org_id}/move")
async def move_org(
    request: Request, org_id: str, viewer: Acting, session: Session, parent: Annotated[str, Form(max_length=40)] = ""
) -> Response:
    org = await tenancy.update_org(
        session, viewer.principal, path_id(org_id, "organization"), validate_as(OrgUpdate, {"parentId": parent})
    )
    return redirect(request, f"/console/org/{org.id}/orgs", f"{org.name} moved.")


@router.post("/org/{org_id}/delete")
async def delete_org(
    request: Request, org_id: str, viewer: Acting, session: Session, cascade: Annotated[str, Form()] = ""
) -> Response:
    org = await tenancy.delete_org(session, viewer.principal, path_id(org_id, "organization"), cascade == "yes")
    parent = org.parent_id or viewer.principal.org_id
    return redirect(request, f"/console/org/{parent}/orgs", f"Organization {org.name} deleted.")
