"""Errors on console pages are pages, not JSON: the same status and message the API would give, with a way
back. A request without a valid session is sent to sign-in and returns where it was going."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from ihub.console.auth import SignInRequired
from ihub.console.web import redirect, render, with_security_headers

CONSOLE_PREFIX = "/console"


def is_console_path(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def _title(status: int) -> str:
    titles = {403: "Not allowed", 404: "Not found", 429: "Too many attempts", 500: "Something went wrong"}
    if status in titles:
        return titles[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# A form's own mistake (bad input, a name taken): back to the form with the message, like any web app.
INPUT_ERRORS = frozenset({400, 409, 413, 422})


def _console_referer(request: Request) -> str | None:
    """Where the visitor came from, only when that is a console page (the Referer is attacker-supplied)."""
    back = request.headers.get("referer", "")
    own = f"{request.url.scheme}://{request.url.netloc}{CONSOLE_PREFIX}/"
    return back if back.startswith(own) else None


def error_page(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The error as a page with its real status; for a rejected form input, a redirect back to the form with
    the message (the request's unit of work has rolled back by then, so nothing of it was stored)."""
    back = _console_referer(request)
    if request.method == "POST" and status in INPUT_ERRORS and back is not None:
        return redirect(request, back, message, error=True)
    response = render(
        request,
        "error.html",
        status_code=status,
        status=status,
        title=_title(status),
        code=code,
        message=message,
        back=back or "/console/",
    )
    for name, value in (headers or {}).items():
        if name.lower() != "www-authenticate":
            response.headers[name] = value
    return response


def sign_in_redirect(request: Request, error: SignInRequired) -> Response:
    target = "/console/signin"
    if error.next_path and error.next_path != "/console/":
        target += "?next=" + quote(error.next_path, safe="")
    return with_security_headers(RedirectResponse(target, status_code=303))
