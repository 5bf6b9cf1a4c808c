"""Helpers of the browser tests: screenshots and signing in as a person does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SCREENSHOTS = Path(os.environ.get("IHUB_SCREENSHOTS", Path(__file__).parents[2] / ".artifacts" / "screenshots"))
PASSWORD = "correct horse battery staple"


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def set_password_and_enter(page: Any, link: str, password: str = PASSWORD) -> None:
    """Open a one-time link, set the password, land signed in."""
    page.goto(link)
    page.get_by_label("New password").fill(password)
    page.get_by_label("Repeat it").fill(password)
    page.get_by_role("button", name="Set password and sign in").click()
    page.wait_for_url("**/console/org/**")


def sign_in(page: Any, email: str, password: str = PASSWORD) -> None:
    page.goto("/console/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def owner_page(page: Any, hub: Any) -> Any:
    """The first Owner, signed in through the link `ihub init` printed."""
    set_password_and_enter(page, hub.signin_url)
    return page
