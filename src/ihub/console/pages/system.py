"""Admin → System: how runs execute on this hub, read-only, for Owners of the root organization only.

Everyone else gets 403 (not 404): the API answers an action a role does not allow with 403, and the System
tab's existence is no secret (see ihub.runs.system). The numbers come from `ihub.runs.system.system_status`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ihub.common.context import Context, Session
from ihub.console.auth import SignedIn
from ihub.console.shell import load_shell
from ihub.console.web import render
from ihub.runs.system import system_status

router = APIRouter()


@router.get("/system")
async def show(request: Request, viewer: SignedIn, session: Session, context: Context) -> HTMLResponse:
    status = await system_status(session, context, viewer.principal)
    shell = await load_shell(session, viewer, None, "admin", "users")
    return render(request, "system.html", **shell.context(), tab="system", system=status)
