"""Console → Templates: list (with inherited ones), a template's page, create/edit/import/delete through the
forms, validation errors at their path, and what a Member may not do."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml
from console_kit import Browser, csrf_in, signed_in

from template_kit import JIRA_DEFINITION_YAML as DEFINITION_YAML

pytestmark = pytest.mark.anyio


async def api_templates(api: Any, org_id: str = "1") -> list[dict[str, Any]]:
    response = await api.client.get(f"/api/v1/org/{org_id}/templates", headers=api.auth)
    assert response.status_code == 200, response.text
    templates: list[dict[str, Any]] = response.json()["templates"]
    return templates


async def create_through_form(browser: Browser, name: str, definition: str = DEFINITION_YAML) -> httpx.Response:
    return await browser.submit(
        "/console/org/1/templates/new",
        "/console/org/1/templates",
        {"name": name, "description": "Tickets to issues", "definition": definition},
    )


async def test_create_a_template_from_yaml_then_edit_it_with_json(owner_browser: Browser, api: Any) -> None:
    response = await create_through_form(owner_browser, "Desk to Jira")
    assert response.status_code == 303, response.text
    [stored] = await api_templates(api)
    assert stored["name"] == "Desk to Jira" and stored["version"] == 1
    assert [slot["id"] for slot in stored["connections"]] == ["jira"]
    assert response.headers["location"] == f"/console/template/{stored['id']}"

    page = (await owner_browser.page(f"/console/template/{stored['id']}")).text
    assert "Jira Cloud" in page and "create-issue" in page and "jwt" in page and "Versions" in page
    assert "Template Desk to Jira created" in page  # the flash

    edit = (await owner_browser.page(f"/console/template/{stored['id']}/edit")).text
    assert "key: create-issue" in edit  # the stored definition, shown as YAML
    changed = yaml.safe_load(DEFINITION_YAML)
    changed["flows"][0]["name"] = "Open an issue"
    response = await owner_browser.submit(
        f"/console/template/{stored['id']}/edit",
        f"/console/template/{stored['id']}/edit",
        {"name": "Desk to Jira", "description": "v2", "definition": json.dumps(changed)},
    )
    assert response.status_code == 303, response.text
    [stored] = await api_templates(api)
    assert stored["version"] == 2 and stored["description"] == "v2"
    assert stored["flows"][0]["name"] == "Open an issue"
    versions = (await owner_browser.page(f"/console/template/{stored['id']}")).text
    assert "v1" in versions and "v2" in versions


async def test_invalid_definition_is_shown_at_its_path_and_nothing_is_stored(owner_browser: Browser, api: Any) -> None:
    broken = DEFINITION_YAML.replace("type: http", "type: teleport")
    response = await create_through_form(owner_browser, "Broken", broken)
    assert response.status_code == 400
    assert "definition.flows[0].steps[0]" in response.text
    assert "teleport" in response.text  # what the user typed is still in the textarea
    assert 'value="Broken"' in response.text
    assert await api_templates(api) == []

    not_yaml = await create_through_form(owner_browser, "Broken", "connections: [unclosed")
    assert not_yaml.status_code == 400 and "not valid YAML or JSON" in not_yaml.text
    assert "connections: [unclosed" in not_yaml.text

    no_name = await create_through_form(owner_browser, "   ")
    assert no_name.status_code == 400 and 'class="field-error"' in no_name.text
    assert await api_templates(api) == []


async def test_a_taken_name_is_shown_on_the_edit_form(owner_browser: Browser, api: Any) -> None:
    assert (await create_through_form(owner_browser, "First")).status_code == 303
    assert (await create_through_form(owner_browser, "Second")).status_code == 303
    second = next(t for t in await api_templates(api) if t["name"] == "Second")
    response = await owner_browser.submit(
        f"/console/template/{second['id']}/edit",
        f"/console/template/{second['id']}/edit",
        {"name": "First", "description": "", "definition": DEFINITION_YAML},
    )
    assert response.status_code == 409 and "already has a template named" in response.text
    assert {t["name"] for t in await api_templates(api)} == {"First", "Second"}


async def test_import_a_file_creates_then_updates(owner_browser: Browser, api: Any) -> None:
    document = {"name": "Imported", "description": "from a file", "definition": yaml.safe_load(DEFINITION_YAML)}
    html = (await owner_browser.page("/console/org/1/templates")).text
    for expected_version in (1, 2):
        response = await owner_browser.http.post(
            "/console/org/1/templates/import",
            data={"csrf": csrf_in(html)},
            files={"file": ("desk.yaml", yaml.safe_dump(document).encode(), "application/yaml")},
            headers={"referer": "http://testserver/console/org/1/templates"},
        )
        assert response.status_code == 303, response.text
        [stored] = await api_templates(api)
        assert stored["name"] == "Imported" and stored["version"] == expected_version

    bad = await owner_browser.http.post(
        "/console/org/1/templates/import",
        data={"csrf": csrf_in(html)},
        files={"file": ("bad.json", b'{"name": "Bad", "definition": {"flows": 3}}', "application/json")},
        headers={"referer": "http://testserver/console/org/1/templates"},
    )
    assert bad.status_code == 303 and bad.headers["location"] == "http://testserver/console/org/1/templates"
    flash = (await owner_browser.page("/console/org/1/templates")).text
    assert "definition.flows" in flash
    assert [t["name"] for t in await api_templates(api)] == ["Imported"]


async def test_delete_a_template(owner_browser: Browser, api: Any) -> None:
    assert (await create_through_form(owner_browser, "Short lived")).status_code == 303
    [stored] = await api_templates(api)
    response = await owner_browser.submit(
        f"/console/template/{stored['id']}", f"/console/template/{stored['id']}/delete", {}
    )
    assert response.status_code == 303 and response.headers["location"] == "/console/org/1/templates"
    assert await api_templates(api) == []


async def test_inherited_templates_are_marked_with_their_origin(
    app: Any, owner_browser: Browser, api: Any, open_browser: Any
) -> None:
    assert (await create_through_form(owner_browser, "From the top")).status_code == 303
    child = await api.add_org("Customer A", "1")
    page = (await owner_browser.page(f"/console/org/{child}/templates")).text
    assert "From the top" in page and "inherited" in page and "Root" in page
    # An Admin of the child sees the root's template read-only: no edit or delete for them.
    admin = await api.add_user(child, "Admin", with_key=False)
    [stored] = await api_templates(api)
    async with open_browser() as http:
        browser = await signed_in(app, http, int(admin.user_id))
        page = (await browser.page(f"/console/template/{stored['id']}")).text
        assert "From the top" in page and "read-only to you" in page
        assert "/edit" not in page and "/delete" not in page
        await browser.page(f"/console/template/{stored['id']}/edit", expect=403)


async def test_member_sees_no_template_controls_and_a_forged_post_is_refused(
    app: Any, owner_browser: Browser, api: Any, open_browser: Any
) -> None:
    assert (await create_through_form(owner_browser, "Owned")).status_code == 303
    [stored] = await api_templates(api)
    member = await api.add_user("1", "Member", with_key=False)
    async with open_browser() as http:
        browser = await signed_in(app, http, int(member.user_id))
        listing = (await browser.page("/console/org/1/templates")).text
        assert "Owned" in listing
        assert "/templates/new" not in listing and "/templates/import" not in listing
        page = (await browser.page(f"/console/template/{stored['id']}")).text
        assert "/edit" not in page and "/delete" not in page
        await browser.page("/console/org/1/templates/new", expect=403)
        # Forged posts with the Member's own valid CSRF token: the services refuse them.
        token = csrf_in(listing)
        for action, data in (
            (f"/console/template/{stored['id']}/edit", {"name": "Hijacked", "definition": DEFINITION_YAML}),
            (f"/console/template/{stored['id']}/delete", {}),
            ("/console/org/1/templates", {"name": "Mine", "definition": DEFINITION_YAML}),
        ):
            response = await http.post(action, data={"csrf": token, **data})
            assert response.status_code == 403, (action, response.text[:500])
    [after] = await api_templates(api)
    assert after["name"] == "Owned" and after["version"] == 1


async def test_an_org_with_no_templates_says_what_to_do(owner_browser: Browser) -> None:
    page = (await owner_browser.page("/console/org/1/templates")).text
    assert "No templates yet." in page and "/console/org/1/templates/new" in page
