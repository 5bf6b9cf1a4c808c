"""Rendering console pages: one Jinja2 environment, the security headers every page carries, flash messages.

Pages are server-rendered HTML with plain forms (they work without JavaScript); `static/console.js` only adds
copy buttons, live refresh and downloads. The Content-Security-Policy allows no inline script or style at all,
so an injected `<script>` in any rendered value would not run even if escaping failed somewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ihub import __version__

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # Links with one-time tokens in their path (password links) must not leak to other sites as a Referer;
    # same-origin still sends it to the console itself, which uses it to return to a form after an input error.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Pages show secrets (a key shown once) and per-user data: never kept by a shared cache or the back button.
    "Cache-Control": "no-store",
}

FLASH_COOKIE = "ihub_flash"
FLASH_MAX_CHARS = 500

environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals["version"] = __version__
environment.filters["urlquote"] = lambda value: quote(str(value), safe="")
environment.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)


def secure_cookies(request: Request) -> bool:
    """Cookies get `Secure` when the hub's public URL is https (it is what browsers reach it by)."""
    public_url: str = request.app.state.context.settings.public_url
    return public_url.lower().startswith("https://")


R = TypeVar("R", bound=Response)


def with_security_headers(response: R) -> R:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        return None
    kind = data.get("kind") if data.get("kind") in ("ok", "error") else "ok"
    return {"kind": str(kind), "text": data["text"][:FLASH_MAX_CHARS]}


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The page `template` with `context`; a flash message set by the previous redirect is shown once."""
    flash = read_flash(request)
    public_url = request.app.state.context.settings.public_url.rstrip("/")
    html = environment.get_template(template).render(request=request, flash=flash, public_url=public_url, **context)
    response = HTMLResponse(html, status_code=status_code)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/console")
    return with_security_headers(response)


def redirect(request: Request, url: str, flash: str | None = None, *, error: bool = False) -> RedirectResponse:
    """303 to `url` (a GET after a POST), optionally with a message for the next page."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        value = json.dumps({"kind": "error" if error else "ok", "text": flash[:FLASH_MAX_CHARS]})
        response.set_cookie(
            FLASH_COOKIE,
            value,
            path="/console",
            httponly=True,
            samesite="lax",
            secure=secure_cookies(request),
            max_age=60,
        )
    with_security_headers(response)
    return response


def safe_next(target: str | None, default: str = "/console/") -> str:
    """Where to go after signing in: only a path inside the console, never another site (`//evil`, `/\\evil`)."""
    if not target or not target.startswith("/console/") or "\\" in target or target.startswith("//"):
        return default
    return target
