"""Helpers of the browser tests: screenshots and signing in as a person does."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import httpx

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


def api_auth(hub: Any) -> dict[str, str]:
    """The first Owner's `/api/v1` Authorization header (the secret `ihub init` printed)."""
    nonce = str(uuid.uuid4())
    digest = hashlib.sha256((hub.secret + nonce).encode()).hexdigest()
    response = httpx.post(f"{hub.url}/api/v1/token", json={"userId": hub.user_id, "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text
    return {"Authorization": response.json()["tokens"][0]["token"]}


def api_project(hub: Any, definition: dict[str, Any], name: str = "Service desk") -> dict[str, Any]:
    """A template with `definition` and a project made from it, through `/api/v1` as an operator's script does."""
    auth = api_auth(hub)
    body = {"name": f"{name} template", "description": "made by a test", "definition": definition}
    response = httpx.post(f"{hub.url}/api/v1/template/org/1", json=body, headers=auth)
    assert response.status_code == 200, response.text
    body = {"name": name, "templateId": response.json()["templates"][0]["id"]}
    response = httpx.post(f"{hub.url}/api/v1/project/org/1", json=body, headers=auth)
    assert response.status_code == 200, response.text
    project: dict[str, Any] = response.json()["projects"][0]
    return project
