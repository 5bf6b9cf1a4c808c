"""Console sign-in, sessions, CSRF and security headers, through the pages as a browser uses them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from console_kit import PASSWORD, Browser, csrf_in, new_link, signed_in
from sqlalchemy import func, select

from ihub.accounts.models import ConsoleSession
from ihub.tenancy.models import User

pytestmark = pytest.mark.anyio


async def count_sessions(app: Any) -> int:
    async with app.state.context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(ConsoleSession)) or 0)


async def test_unsigned_visitor_is_sent_to_sign_in_and_back(app: Any, open_browser: Any, owner: Any) -> None:
    async with open_browser() as http:
        response = await http.get("/console/org/1/users?user=1")
        assert response.status_code == 303
        assert response.headers["location"] == "/console/signin?next=%2Fconsole%2Forg%2F1%2Fusers%3Fuser%3D1"
        browser = Browser(http)
        await browser.set_password(await new_link(app, int(owner.user_id)))
        await http.post("/console/signout", data={"csrf": csrf_in((await browser.page("/console/account")).text)})
        response = await browser.submit(
            "/console/signin?next=%2Fconsole%2Forg%2F1%2Fusers",
            "/console/signin",
            {"email": "owner@ihub.local", "password": PASSWORD, "next": "/console/org/1/users"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/console/org/1/users"
        assert "Users of Root" in (await browser.page("/console/org/1/users")).text


async def test_sign_in_never_redirects_to_another_site(app: Any, open_browser: Any, owner: Any) -> None:
    async with open_browser() as http:
        browser = Browser(http)
        await browser.set_password(await new_link(app, int(owner.user_id)))
    async with open_browser() as http:
        browser = Browser(http)
        for target in ("https://evil.example/", "//evil.example/console/", "/console/\\evil", "/api/v1/org"):
            response = await browser.submit(
                "/console/signin",
                "/console/signin",
                {"email": "owner@ihub.local", "password": PASSWORD, "next": target},
            )
            assert response.headers["location"] == "/console/", target


async def test_unknown_email_and_wrong_password_get_the_same_page(app: Any, open_browser: Any, owner: Any) -> None:
    async with open_browser() as http:
        await Browser(http).set_password(await new_link(app, int(owner.user_id)))
    async with open_browser() as http:
        browser = Browser(http)
        wrong = await browser.sign_in("owner@ihub.local", "not the password at all")
        unknown = await browser.sign_in("nobody@ihub.local", "not the password at all")
        assert wrong.status_code == unknown.status_code == 401
        assert "wrong email or password" in wrong.text and "wrong email or password" in unknown.text
        assert "ihub_session" not in http.cookies
        assert await count_sessions(app) == 1  # only the one that setting the password opened


async def test_sign_out_ends_the_session_on_the_server(app: Any, owner_browser: Browser) -> None:
    http = owner_browser.http
    stolen = http.cookies.get("ihub_session")
    assert stolen and await count_sessions(app) == 1
    response = await owner_browser.submit("/console/account", "/console/signout", {})
    assert response.status_code == 303 and response.headers["location"] == "/console/signin"
    assert await count_sessions(app) == 0
    # The old cookie, replayed, no longer opens anything.
    async with httpx.AsyncClient(transport=http._transport, base_url=http.base_url) as replay:  # noqa: SLF001
        replay.cookies.set("ihub_session", stolen)
        assert (await replay.get("/console/account")).status_code == 303


async def test_post_without_the_csrf_token_is_refused_and_changes_nothing(app: Any, owner_browser: Browser) -> None:
    http = owner_browser.http
    for data in ({}, {"csrf": "forged"}):
        response = await http.post(
            "/console/org/1/users", data={**data, "name": "Mallory", "email": "m@example.com", "role": "Owner"}
        )
        assert response.status_code == 403
        assert "did not come from this console" in response.text
    response = await owner_browser.submit("/console/org/1/users", "/console/org/1/orgs", {"name": "Evil"})
    assert response.status_code == 303  # the same form with its token works
    html = (await owner_browser.page("/console/org/1/users")).text
    response = await http.post(
        "/console/org/1/users",
        data={"csrf": csrf_in(html), "name": "Mallory", "email": "m@example.com", "role": "Owner"},
        headers={"origin": "https://evil.example"},
    )
    assert response.status_code == 403
    async with app.state.context.sessions() as session:
        assert await session.scalar(select(User).where(User.email == "m@example.com")) is None


async def test_pages_carry_a_strict_content_security_policy(owner_browser: Browser) -> None:
    for path in ("/console/account", "/console/org/1/users", "/console/signin"):
        response = await owner_browser.page(path)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["cache-control"] == "no-store"
        assert "<script>" not in response.text and " onclick=" not in response.text and "style=" not in response.text


async def test_session_cookie_flags(app: Any, open_browser: Any, owner: Any) -> None:
    async with open_browser() as http:
        response = await Browser(http).set_password(await new_link(app, int(owner.user_id)))
        cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "ihub_session=" in v)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # the test hub's public URL is http


async def test_secure_cookie_when_the_public_url_is_https(app: Any, owner: Any) -> None:
    app.state.context.settings = app.state.context.settings.model_copy(update={"public_url": "https://hub.example"})
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40002))
    async with httpx.AsyncClient(transport=transport, base_url="https://hub.example") as http:
        response = await Browser(http).set_password(await new_link(app, int(owner.user_id)))
        cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "ihub_session=" in v)
        assert "Secure" in cookie


async def test_a_link_works_once_and_signs_in(app: Any, open_browser: Any, owner: Any) -> None:
    link = await new_link(app, int(owner.user_id))
    async with open_browser() as http:
        browser = await signed_in_with(app, http, link)
        assert "Account settings" in (await browser.page("/console/account")).text
    async with open_browser() as http:
        response = await http.get(link)
        assert response.status_code == 404 and "This link does not work" in response.text


async def signed_in_with(app: Any, http: httpx.AsyncClient, link: str) -> Browser:
    browser = Browser(http)
    response = await browser.set_password(link)
    assert response.status_code == 303
    return browser


async def test_deleting_a_user_ends_their_console_session(app: Any, owner_browser: Browser, api: Any) -> None:
    [admin] = await api.add_users("1", "Admin")
    async with httpx.AsyncClient(
        transport=owner_browser.http._transport,
        base_url=owner_browser.http.base_url,  # noqa: SLF001
    ) as http:
        admin_browser = await signed_in(app, http, int(admin.user_id))
        await admin_browser.page("/console/account")
        response = await owner_browser.submit(
            f"/console/org/1/users?user={admin.user_id}", f"/console/user/{admin.user_id}/delete", {}
        )
        assert response.status_code == 303
        assert (await http.get("/console/account")).status_code == 303
