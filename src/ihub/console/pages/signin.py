"""Sign-in, sign-out and setting a password from a one-time link."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ihub.accounts import service as accounts
from ihub.common.context import Context, Session, client_address
from ihub.common.errors import ApiError
from ihub.console.auth import (
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    Acting,
    anonymous_form,
    new_signin_csrf,
)
from ihub.console.web import redirect, render, safe_next, secure_cookies, with_security_headers

router = APIRouter()


def _with_signin_csrf(request: Request, page: str, status: int = 200, **context: object) -> HTMLResponse:
    """A pre-session form page with a fresh double-submit token in both the cookie and the form."""
    token = new_signin_csrf()
    response = render(request, page, status_code=status, csrf=token, **context)
    response.set_cookie(
        SIGNIN_CSRF_COOKIE, token, path="/console", httponly=True, samesite="strict", secure=secure_cookies(request)
    )
    return response


async def _start(request: Request, session: Session, context: Context, user_id: int, target: str) -> Response:
    started = await accounts.start_session(
        session, context.settings, user_id, client_address(request), request.headers.get("user-agent", "")
    )
    response = RedirectResponse(target, status_code=303)
    # No max_age: the cookie ends with the browser; the server's idle and absolute limits end the session anyway.
    response.set_cookie(
        SESSION_COOKIE, started.token, path="/console", httponly=True, samesite="lax", secure=secure_cookies(request)
    )
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/console")
    return with_security_headers(response)


@router.get("/signin")
async def signin_page(request: Request, next: str = "") -> HTMLResponse:
    return _with_signin_csrf(request, "signin.html", next=safe_next(next), email="", error=None)


@router.post("/signin", dependencies=[Depends(anonymous_form)])
async def signin(
    request: Request,
    session: Session,
    context: Context,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    try:
        user_id = await accounts.sign_in(session, context.settings, email, password, client_address(request))
    except ApiError as error:
        response = _with_signin_csrf(
            request, "signin.html", status=error.status, next=safe_next(next), email=email, error=error.message
        )
        response.headers.update(error.headers)
        return response
    return await _start(request, session, context, user_id, safe_next(next))


@router.get("/password/{token}")
async def password_page(request: Request, token: str, session: Session, context: Context) -> HTMLResponse:
    target = await accounts.peek_link(session, token)
    return _with_signin_csrf(
        request,
        "password.html",
        status=200 if target else 404,
        token=token,
        target=target,
        error=None,
        min_length=context.settings.password_min_length,
        ttl_hours=context.settings.signin_link_ttl_hours,
    )


@router.post("/password/{token}", dependencies=[Depends(anonymous_form)])
async def set_password(
    request: Request,
    token: str,
    session: Session,
    context: Context,
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    target = await accounts.peek_link(session, token)
    try:
        if target is not None and password != confirm:
            raise ApiError(400, "the two passwords differ; type the same password twice", "password_mismatch")
        user_id = await accounts.redeem_link(session, context.settings, token, password)
    except ApiError as error:
        return _with_signin_csrf(
            request,
            "password.html",
            status=error.status,
            token=token,
            target=target,
            error=error.message,
            min_length=context.settings.password_min_length,
            ttl_hours=context.settings.signin_link_ttl_hours,
        )
    return await _start(request, session, context, user_id, "/console/")


@router.post("/signout")
async def signout(request: Request, viewer: Acting, session: Session) -> Response:
    await accounts.end_session(session, viewer.session_id)
    response = redirect(request, "/console/signin", "You are signed out.")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response
