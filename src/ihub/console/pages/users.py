"""Admin → Users: the users of the selected organization, one selected; invite, reset password, change role,
delete, and (Owners) generate an API secret key, which is shown once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.accounts import service as accounts
from ihub.common.body import validate_as
from ihub.common.context import Context, Session
from ihub.common.ids import path_id
from ihub.console.auth import Acting, SignedIn, Viewer
from ihub.console.forms import NameField
from ihub.console.shell import load_shell
from ihub.console.web import redirect, render
from ihub.provisioning.service import generate_key_for, has_key
from ihub.tenancy import service as tenancy
from ihub.tenancy.models import User
from ihub.tenancy.permissions import Role
from ihub.tenancy.schemas import UserCreate, UserUpdate

router = APIRouter()


def allowed_actions(viewer: Viewer, user: User) -> dict[str, str | None]:
    """Each action on `user` mapped to None when the viewer may do it, or to the reason it is disabled.
    Display only: the services check the same rules again when the form is posted."""
    role = Role(user.role)
    manage: str | None = None
    if not viewer.is_admin:
        manage = "only an Owner or Admin may manage users"
    elif viewer.principal.role is Role.ADMIN and role is Role.OWNER:
        manage = "only an Owner may manage an Owner"
    yourself = user.id == viewer.user_id
    return {
        "key": None if viewer.is_owner else "only an Owner may generate API keys",
        "link": manage or ("change your own password in Account settings" if yourself else None),
        "role": manage or ("you cannot change your own role" if yourself else None),
        "delete": manage or ("you cannot delete yourself" if yourself else None),
    }


def roles_for(viewer: Viewer) -> list[str]:
    """The roles the viewer may give: an Admin never makes an Owner."""
    return [role.value for role in Role if viewer.is_owner or role is not Role.OWNER]


async def users_page(
    request: Request, session: AsyncSession, viewer: Viewer, org_id: int, selected_id: int | None, **extra: Any
) -> HTMLResponse:
    shell = await load_shell(session, viewer, org_id, "admin", "users")
    users = list(await tenancy.list_users(session, viewer.principal, shell.org.id))
    selected = next((u for u in users if u.id == selected_id), None)
    if selected is None and selected_id is not None:
        selected = await tenancy.visible_user(session, viewer.principal, selected_id)
    ids = [u.id for u in users] + ([selected.id] if selected else [])
    return render(
        request,
        "users.html",
        **shell.context(),
        tab="users",
        users=users,
        selected=selected,
        actions=allowed_actions(viewer, selected) if selected else {},
        keyed=await has_key(session, ids),
        passworded=await accounts.has_password(session, ids),
        roles=roles_for(viewer),
        **{"issued_key": None, "issued_link": None, **extra},
    )


@router.get("/org/{org_id}/users")
async def list_users(
    request: Request, org_id: str, viewer: SignedIn, session: Session, user: str | None = None
) -> HTMLResponse:
    selected = path_id(user, "user") if user else None
    return await users_page(request, session, viewer, path_id(org_id, "organization"), selected)


@router.post("/org/{org_id}/users")
async def invite_user(
    request: Request,
    org_id: str,
    viewer: Acting,
    session: Session,
    context: Context,
    name: NameField = "",
    email: NameField = "",
    role: Annotated[str, Form(max_length=20)] = "Member",
) -> HTMLResponse:
    """Create the user and a one-time link to set their password; the page shows the link once to pass on."""
    entry = validate_as(UserCreate, {"name": name, "email": email, "role": role})
    org = path_id(org_id, "organization")
    [user] = await tenancy.create_users(session, viewer.principal, org, [entry])
    link = await accounts.create_link(session, context.settings, viewer.principal, user.id, accounts.LinkPurpose.INVITE)
    return await users_page(
        request, session, viewer, org, user.id, issued_link=accounts.link_url(context.settings, link)
    )


@router.post("/user/{user_id}/key")
async def generate_key(request: Request, user_id: str, viewer: Acting, session: Session, context: Context) -> Response:
    target = await tenancy.visible_user(session, viewer.principal, path_id(user_id, "user"))
    issued = await generate_key_for(session, context.box, viewer.principal, target.id)
    return await users_page(request, session, viewer, target.org_id, target.id, issued_key=issued)


@router.post("/user/{user_id}/link")
async def password_link(
    request: Request, user_id: str, viewer: Acting, session: Session, context: Context
) -> HTMLResponse:
    """A reset: the user's password and sessions end now, and the new one-time link is shown once."""
    target = await tenancy.visible_user(session, viewer.principal, path_id(user_id, "user"))
    link = await accounts.create_link(
        session, context.settings, viewer.principal, target.id, accounts.LinkPurpose.RESET
    )
    return await users_page(
        request, session, viewer, target.org_id, target.id, issued_link=accounts.link_url(context.settings, link)
    )


@router.post("/user/{user_id}/role")
async def change_role(
    request: Request, user_id: str, viewer: Acting, session: Session, role: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    change = validate_as(UserUpdate, {"role": role})
    user = await tenancy.update_user(session, viewer.principal, path_id(user_id, "user"), change)
    return redirect(request, f"/console/org/{user.org_id}/users?user={user.id}", f"{user.name} is now {user.role}.")


@router.post("/user/{user_id}/delete")
async def delete_user(request: Request, user_id: str, viewer: Acting, session: Session) -> Response:
    user = await tenancy.delete_user(session, viewer.principal, path_id(user_id, "user"))
    return redirect(request, f"/console/org/{user.org_id}/users", f"{user.name} ({user.email}) was deleted.")
