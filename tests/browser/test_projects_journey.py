"""The first Owner's journey in a real browser: paste a template definition, make a project from it with the
wizard, fill in its connection and see it configured."""

from __future__ import annotations

from typing import Any

import pytest
from browser_kit import owner_page, shot

from template_kit import JIRA_DEFINITION_YAML as DEFINITION

pytestmark = pytest.mark.slow

SECRET = "atl-browser-journey-secret-value"


def test_owner_creates_a_template_and_a_configured_project(page: Any, hub: Any) -> None:
    owner_page(page, hub)
    assert page.url.endswith("/console/org/1/projects")
    assert page.get_by_text("No projects and no templates yet.").is_visible()
    shot(page, "projects-empty")

    page.get_by_role("link", name="Create a template").click()
    page.get_by_label("Name").fill("Desk to Jira")
    page.get_by_label("Description").fill("Tickets become Jira issues")
    page.get_by_label("Definition").fill(DEFINITION)
    shot(page, "template-new")
    page.get_by_role("button", name="Create template").click()
    page.wait_for_url("**/console/template/*")
    assert page.get_by_role("heading", name="Desk to Jira").is_visible()
    assert page.get_by_role("cell", name="Create a Jira issue").is_visible()
    shot(page, "template")

    page.get_by_role("link", name="Create a project from it").click()
    page.get_by_label("Name").fill("Support desk")
    assert page.get_by_label("Template").input_value() != ""
    shot(page, "project-new")
    page.get_by_role("button", name="Create and continue").click()
    page.wait_for_url("**/setup")
    page.get_by_label("siteUrl").fill("https://acme.atlassian.net")
    page.get_by_label("email").fill("bot@acme.example")
    page.get_by_label("apiToken").fill(SECRET)
    shot(page, "project-setup")
    page.get_by_role("button", name="Save and finish").click()
    page.wait_for_url("**/console/project/*")
    assert page.locator("h3 .badge-configured").is_visible()
    assert SECRET not in page.content()
    assert page.get_by_role("link", name="Trigger").is_visible()
    shot(page, "project")

    page.get_by_role("link", name="Projects", exact=True).first.click()
    assert page.get_by_role("link", name="Support desk").is_visible()
    assert page.locator(".projects-table .badge-configured").is_visible()
    shot(page, "projects")
