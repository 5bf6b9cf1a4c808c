"""Who is signed in to the console, and CSRF protection of every state-changing request.

The session itself (cookie token digest, idle and absolute expiry, the user's role) belongs to
`ihub.accounts`; this module only reads the cookie and turns it into the same `Principal` that `/api/v1` uses, so
every console action goes through the same services and permission rules.

CSRF: a synchronizer token. Each session has a random `csrf` value; every form carries it in a hidden field and
every POST is refused (403) unless it matches, compared in constant time. Before sign-in there is no session, so
the sign-in and set-password forms use a double-submit cookie instead (login CSRF). `SameSite=Lax` on the
session cookie is a second, independent barrier.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ihub.accounts import service as accounts
from ihub.audit.recorder import Channel, begin_request
from ihub.common.context import Context, Session, received
from ihub.common.crypto import constant_time_equals
from ihub.common.errors import ApiError
from ihub.db.unit_of_work import unit_of_work
from ihub.tenancy.permissions import Principal, Role

SESSION_COOKIE = "ihub_session"
SIGNIN_CSRF_COOKIE = "ihub_signin_csrf"
CSRF_FIELD = "csrf"


class SignInRequired(Exception):
    """No valid session: the app answers with a redirect to the sign-in page (console/errors.py)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class Viewer:
    """The signed-in person, as every page and action sees them."""

    principal: Principal
    session_id: int
    csrf: str
    name: str
    email: str

    @property
    def user_id(self) -> int:
        return self.principal.user_id

    @property
    def is_owner(self) -> bool:
        return self.principal.role is Role.OWNER

    @property
    def is_root_owner(self) -> bool:
        """An Owner of the root organization (path "/<id>/"): the only one who sees the System page."""
        return self.is_owner and self.principal.org_path.count("/") == 2

    @property
    def is_admin(self) -> bool:
        """Owner or Admin: may manage users (not Owners, for an Admin) and templates."""
        return self.principal.role is not Role.MEMBER


def _next_path(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return request.url.path + query if request.method == "GET" else "/console/"


async def current_viewer(request: Request, session: Session, context: Context) -> Viewer:
    token = request.cookies.get(SESSION_COOKIE)
    active = await accounts.find_session(session, context.settings, token) if token else None
    if active is None:
        raise SignInRequired(_next_path(request))
    if active.stale:
        await _touch(request, session, context, active.id)
    # A form post's unit of work is recorded in the audit log as this person's (GET pages record nothing).
    begin_request(request, session, active.principal, Channel.CONSOLE)
    return Viewer(active.principal, active.id, active.csrf, active.name, active.email)


async def _touch(request: Request, session: Session, context: Context, session_id: int) -> None:
    """Move the idle deadline. A write (POST) request does it in its own unit of work; a read request has a
    read-only connection, so it opens a short write transaction (at most once a minute per session)."""
    if request.method == "POST":
        await accounts.touch_session(session, session_id)
        return
    async with unit_of_work(context.sessions) as writer:
        await accounts.touch_session(writer, session_id)


async def posted_form_value(request: Request, name: str) -> str:
    await received(request)
    form = await request.form()
    value = form.get(name)
    return value if isinstance(value, str) else ""


def refuse_forged(expected: str, sent: str) -> None:
    if not expected or not sent or not constant_time_equals(expected, sent):
        raise ApiError(
            403,
            "this form has expired or did not come from this console; reload the page and try again",
            "csrf_failed",
        )


def refuse_cross_origin(request: Request) -> None:
    """Browsers send Origin on every POST; one naming another site is refused before the token is looked at."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        own = f"{request.url.scheme}://{request.url.netloc}"
        public: str = request.app.state.context.settings.public_url.rstrip("/")
        if origin.rstrip("/") not in (own, public):
            raise ApiError(403, "cross-site form posts are refused", "csrf_failed")


async def signed_in_form(request: Request, viewer: Annotated[Viewer, Depends(current_viewer)]) -> Viewer:
    """The viewer of a POST whose form carries their session's CSRF token."""
    refuse_cross_origin(request)
    refuse_forged(viewer.csrf, await posted_form_value(request, CSRF_FIELD))
    return viewer


async def anonymous_form(request: Request) -> None:
    """A pre-session form (sign-in, set password): the double-submit cookie must match the posted field."""
    refuse_cross_origin(request)
    refuse_forged(request.cookies.get(SIGNIN_CSRF_COOKIE, ""), await posted_form_value(request, CSRF_FIELD))


def new_signin_csrf() -> str:
    return secrets.token_urlsafe(24)


SignedIn = Annotated[Viewer, Depends(current_viewer)]
Acting = Annotated[Viewer, Depends(signed_in_form)]
