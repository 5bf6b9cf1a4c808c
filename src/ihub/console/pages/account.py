"""Account settings: the signed-in person's profile, password, sessions and (Owners) own API secret key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ihub.accounts import service as accounts
from ihub.common.context import Context, Session
from ihub.console.auth import Acting, SignedIn, Viewer
from ihub.console.shell import load_shell
from ihub.console.web import redirect, render
from ihub.provisioning.service import generate_key_for, has_key
from ihub.tenancy import service as tenancy

router = APIRouter()


async def account_page(request: Request, session: AsyncSession, viewer: Viewer, **extra: Any) -> HTMLResponse:
    shell = await load_shell(session, viewer, None, "account")
    me = await tenancy.visible_user(session, viewer.principal, viewer.user_id)
    return render(
        request,
        "account.html",
        **shell.context(),
        me=me,
        sessions=await accounts.list_sessions(session, viewer.user_id),
        has_key=viewer.user_id in await has_key(session, [viewer.user_id]),
        **{"issued_key": None, **extra},
    )


@router.get("/account")
async def account(request: Request, viewer: SignedIn, session: Session) -> HTMLResponse:
    return await account_page(request, session, viewer)


@router.post("/account/password")
async def change_password(
    request: Request,
    viewer: Acting,
    session: Session,
    context: Context,
    current: Annotated[str, Form(max_length=1024)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    if password != confirm:
        return redirect(request, "/console/account", "The two new passwords differ.", error=True)
    await accounts.change_password(session, context.settings, viewer.user_id, current, password, viewer.session_id)
    return redirect(request, "/console/account", "Password changed. Your other sessions were signed out.")


@router.post("/account/sessions/end-others")
async def end_other_sessions(request: Request, viewer: Acting, session: Session) -> Response:
    ended = await accounts.end_all_sessions(session, viewer.user_id, except_id=viewer.session_id)
    return redirect(request, "/console/account", f"Signed out {ended} other session(s).")


@router.post("/account/key")
async def generate_own_key(request: Request, viewer: Acting, session: Session, context: Context) -> HTMLResponse:
    issued = await generate_key_for(session, context.box, viewer.principal, viewer.user_id)
    return await account_page(request, session, viewer, issued_key=issued)
