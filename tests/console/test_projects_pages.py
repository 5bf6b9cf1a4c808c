"""Console → Projects: the landing page, the wizard (name + template, then connections and settings), a
project's page (connections per slot, settings, version, delete) and secrets that never come back."""

from __future__ import annotations

import re
from typing import Any

import pytest
from console_kit import Browser, signed_in

from template_kit import definition

pytestmark = pytest.mark.anyio

SECRET = "atl-token-that-must-never-be-shown-0123456789"


async def new_template(api: Any, org_id: str = "1", **kwargs: Any) -> dict[str, Any]:
    body = {"name": "Desk to Jira", "description": "", "definition": definition(**kwargs)}
    response = await api.client.post(f"/api/v1/template/org/{org_id}", json=body, headers=api.auth)
    assert response.status_code == 200, response.text
    template: dict[str, Any] = response.json()["templates"][0]
    return template


async def api_project(api: Any, project_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/project/{project_id}", headers=api.auth)
    assert response.status_code == 200, response.text
    project: dict[str, Any] = response.json()["projects"][0]
    return project


async def wizard(browser: Browser, template_id: str, name: str = "Support desk") -> str:
    """Step 1 of the wizard; returns the new project's id (step 2 is where it redirects)."""
    response = await browser.submit(
        f"/console/org/1/projects/new?template={template_id}",
        "/console/org/1/projects",
        {"name": name, "template": template_id, "description": "Tickets"},
    )
    assert response.status_code == 303, response.text
    found = re.fullmatch(r"/console/project/(\d+)/setup", response.headers["location"])
    assert found, response.headers["location"]
    return found.group(1)


async def test_wizard_creates_a_project_and_fills_its_connection(owner_browser: Browser, api: Any) -> None:
    template = await new_template(api)
    step1 = (await owner_browser.page(f"/console/org/1/projects/new?template={template['id']}")).text
    assert 'for="project-name"' in step1 and "Desk to Jira" in step1
    project_id = await wizard(owner_browser, template["id"])

    setup = (await owner_browser.page(f"/console/project/{project_id}/setup")).text
    # Generated from the jira type's fields: url, email and a write-only secret input.
    assert 'type="url"' in setup and 'name="jira.siteUrl"' in setup
    assert 'type="email"' in setup and 'name="jira.email"' in setup
    assert 'name="jira.apiToken" type="password" value=""' in setup
    assert 'for="conn-jira-apiToken"' in setup
    assert (await api_project(api, project_id))["connections"][0]["configured"] is False

    response = await owner_browser.submit(
        f"/console/project/{project_id}/setup",
        f"/console/project/{project_id}/setup",
        {
            "jira.siteUrl": "https://acme.atlassian.net",
            "jira.email": "bot@acme.example",
            "jira.apiToken": SECRET,
            "settings": "jiraProject: SUP\n",
        },
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/console/project/{project_id}"
    stored = await api_project(api, project_id)
    [connection] = stored["connections"]
    assert connection["configured"] is True and connection["missing"] == []
    assert connection["secretsSet"] == ["apiToken"]
    assert stored["settings"] == {"jiraProject": "SUP"}

    page = (await owner_browser.page(f"/console/project/{project_id}")).text
    assert "badge-configured" in page and "https://acme.atlassian.net" in page
    [flow] = stored["flows"]
    assert f'value="{flow["id"]}"' in page and f"/console/flow/{flow['id']}/trigger" in page
    assert f"/console/project/{project_id}/runs" in page

    # Saving the slot again with the secret input left empty keeps the stored secret.
    response = await owner_browser.submit(
        f"/console/project/{project_id}",
        f"/console/project/{project_id}/connections",
        {
            "slot": "jira",
            "jira.siteUrl": "https://acme.atlassian.net",
            "jira.email": "ops@acme.example",
            "jira.apiToken": "",  # a browser posts the empty password input
        },
    )
    assert response.status_code == 303, response.text
    [connection] = (await api_project(api, project_id))["connections"]
    assert connection["configured"] is True and connection["config"]["email"] == "ops@acme.example"

    for path in (
        "/console/org/1/projects",
        f"/console/project/{project_id}",
        f"/console/project/{project_id}/setup",
        f"/console/template/{template['id']}",
    ):
        assert SECRET not in (await owner_browser.page(path)).text, path


async def test_connection_errors_are_shown_at_the_field_and_nothing_is_stored(owner_browser: Browser, api: Any) -> None:
    template = await new_template(api)
    project_id = await wizard(owner_browser, template["id"])
    response = await owner_browser.submit(
        f"/console/project/{project_id}/setup",
        f"/console/project/{project_id}/setup",
        {"jira.siteUrl": "ftp://acme", "jira.email": "bot@acme.example", "jira.apiToken": SECRET},
    )
    assert response.status_code == 400
    assert "must be an http:// or https:// URL" in response.text
    assert 'value="ftp://acme"' in response.text  # typed values come back ...
    assert SECRET not in response.text  # ... secrets never do
    [connection] = (await api_project(api, project_id))["connections"]
    assert connection["config"] == {} and connection["secretsSet"] == []


async def test_upgrade_settings_rename_and_delete(owner_browser: Browser, api: Any) -> None:
    template = await new_template(api)
    project_id = await wizard(owner_browser, template["id"])
    response = await api.client.put(f"/api/v1/template/{template['id']}", json={"description": "v2"}, headers=api.auth)
    assert response.status_code == 200
    page = (await owner_browser.page(f"/console/project/{project_id}")).text
    assert "v2 available" in page
    response = await owner_browser.submit(
        f"/console/project/{project_id}", f"/console/project/{project_id}/upgrade", {"version": ""}
    )
    assert response.status_code == 303
    assert (await api_project(api, project_id))["templateVersion"] == 2
    response = await owner_browser.submit(
        f"/console/project/{project_id}", f"/console/project/{project_id}/upgrade", {"version": "1"}
    )
    assert response.status_code == 303
    assert (await api_project(api, project_id))["templateVersion"] == 1

    bad = await owner_browser.submit(
        f"/console/project/{project_id}", f"/console/project/{project_id}/settings", {"settings": "- a list"}
    )
    assert bad.status_code == 400 and "- a list" in bad.text
    response = await owner_browser.submit(
        f"/console/project/{project_id}", f"/console/project/{project_id}/settings", {"settings": '{"a": 1}'}
    )
    assert response.status_code == 303
    assert (await api_project(api, project_id))["settings"] == {"a": 1}

    response = await owner_browser.submit(
        f"/console/project/{project_id}",
        f"/console/project/{project_id}/details",
        {"name": "Renamed", "description": "new"},
    )
    assert response.status_code == 303
    assert (await api_project(api, project_id))["name"] == "Renamed"

    response = await owner_browser.submit(f"/console/project/{project_id}", f"/console/project/{project_id}/delete", {})
    assert response.status_code == 303 and response.headers["location"] == "/console/org/1/projects"
    gone = await api.client.get(f"/api/v1/project/{project_id}", headers=api.auth)
    assert gone.status_code == 404


async def test_wizard_step_one_errors_keep_what_was_typed(owner_browser: Browser, api: Any) -> None:
    template = await new_template(api)
    await wizard(owner_browser, template["id"], name="Taken")
    response = await owner_browser.submit(
        "/console/org/1/projects/new",
        "/console/org/1/projects",
        {"name": "Taken", "template": template["id"], "description": "second try"},
    )
    assert response.status_code == 409 and "already has a project named" in response.text
    assert "second try" in response.text


async def test_a_member_manages_projects_too(app: Any, api: Any, open_browser: Any) -> None:
    template = await new_template(api)
    member = await api.add_user("1", "Member", with_key=False)
    async with open_browser() as http:
        browser = await signed_in(app, http, int(member.user_id))
        project_id = await wizard(browser, template["id"], name="Member's")
        page = (await browser.page(f"/console/project/{project_id}")).text
        assert "Delete project" in page and "Save Jira" in page


async def test_a_template_without_connections_skips_step_two(owner_browser: Browser, api: Any) -> None:
    flow = {"key": "echo", "name": "Echo", "trigger": {"type": "jwt"}, "steps": [{"id": "r", "type": "respond"}]}
    template = await new_template(api, slots=[], flows=[flow])
    response = await owner_browser.submit(
        "/console/org/1/projects/new",
        "/console/org/1/projects",
        {"name": "Plain", "template": template["id"], "description": ""},
    )
    assert response.status_code == 303 and re.fullmatch(r"/console/project/\d+", response.headers["location"])


async def test_an_org_with_nothing_says_what_to_do(owner_browser: Browser, api: Any) -> None:
    landing = await owner_browser.http.get("/console/")
    assert landing.headers["location"] == "/console/org/1/projects"
    page = (await owner_browser.page("/console/org/1/projects")).text
    assert "No projects and no templates yet." in page and "/console/org/1/templates/new" in page
    wizard_page = (await owner_browser.page("/console/org/1/projects/new")).text
    assert "There is no template to make a project from." in wizard_page
    await new_template(api)
    page = (await owner_browser.page("/console/org/1/projects")).text
    assert "Create your first project" in page
