"""Driving the console in-process as a browser would (forms, cookies, CSRF fields), without a browser: for
the unit-level tests of sessions, links, CSRF and permissions that run on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from ihub.accounts import service as accounts

PASSWORD = "correct horse battery staple"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_in(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def new_link(app: Any, user_id: int, purpose: accounts.LinkPurpose = accounts.LinkPurpose.INVITE) -> str:
    """A one-time link's path, made from the server's shell (as `ihub user invite` does)."""
    context = app.state.context
    async with context.sessions() as session:
        link = await accounts.create_link(session, context.settings, None, user_id, purpose)
        await session.commit()
    return link.path()


@dataclass
class Browser:
    """One browser: its own cookie jar. `page()` GETs, `submit()` posts a form with the page's CSRF token."""

    http: httpx.AsyncClient

    async def page(self, path: str, expect: int = 200) -> httpx.Response:
        response = await self.http.get(path)
        assert response.status_code == expect, (response.status_code, response.text[:2000])
        return response

    async def submit(self, form_page: str, action: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
        """Load `form_page`, then post `data` with its CSRF token to `action` (what clicking the button does)."""
        html = (await self.page(form_page)).text
        return await self.http.post(
            action,
            data={"csrf": csrf_in(html), **data},
            headers={"referer": str(self.http.base_url.join(form_page))},
            **kwargs,
        )

    async def set_password(self, link_path: str, password: str = PASSWORD) -> httpx.Response:
        return await self.submit(link_path, link_path, {"password": password, "confirm": password})

    async def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return await self.submit("/console/signin", "/console/signin", {"email": email, "password": password})


async def signed_in(app: Any, http: httpx.AsyncClient, user_id: int, password: str = PASSWORD) -> Browser:
    """A browser signed in as `user_id` after setting their password through a one-time link."""
    browser = Browser(http)
    response = await browser.set_password(await new_link(app, user_id), password)
    assert response.status_code == 303, response.text[:2000]
    assert response.headers["location"] == "/console/"
    return browser
