"""The console journeys of the seed documents and the admin basics, in Chromium against a real `ihub serve`."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import httpx
from browser_kit import PASSWORD, owner_page, set_password_and_enter, shot, sign_in


def test_first_sign_in_from_the_init_link(page: Any, hub: Any) -> None:
    assert hub.signin_url.startswith(hub.url + "/console/password/")
    page.goto(hub.signin_url)
    shot(page, "set-password")
    page.get_by_label("New password").fill("short")
    page.get_by_label("Repeat it").fill("short")
    page.get_by_role("button", name="Set password and sign in").click()
    # The browser's own minlength check or the server's policy: still on the form, not signed in.
    assert "/console/password/" in page.url
    set_password_and_enter(page, hub.signin_url)
    page.goto("/console/account")
    assert page.get_by_role("link", name=re.compile(r"Owner \(Owner\)")).is_visible()
    # The link worked once.
    other = page.context.browser.new_context(base_url=hub.url)
    try:
        again = other.new_page()
        again.goto(hub.signin_url)
        assert again.get_by_role("heading", name="This link does not work").is_visible()
    finally:
        other.close()


def test_seed_journey_generate_key_and_copy_user_id_then_log_in_with_them(page: Any, hub: Any) -> None:
    """ "Go to the admin section, click users, select yourself from the left panel, then you will see a button
    to generate key; on the same page copy your user id." Then POST /api/v1/token with exactly those."""
    owner_page(page, hub)
    page.get_by_role("link", name="Admin").click()
    page.get_by_role("link", name=re.compile("Owner.*owner@ihub.local")).click()
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Generate key").click()
    secret = page.get_by_role("textbox", name="Secret key").input_value()
    shot(page, "admin-users-generate-key")
    page.locator("#user-id + button, #user-id ~ button").first.click()
    user_id = page.evaluate("navigator.clipboard.readText()")
    assert user_id == hub.user_id
    nonce = str(uuid.uuid1())
    digest = hashlib.sha256((secret + nonce).encode()).hexdigest()
    response = httpx.post(f"{hub.url}/api/v1/token", json={"userId": user_id, "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text
    # The key printed at first start was replaced: it no longer logs in.
    nonce = str(uuid.uuid1())
    old = hashlib.sha256((hub.secret + nonce).encode()).hexdigest()
    response = httpx.post(f"{hub.url}/api/v1/token", json={"userId": user_id, "nonce": nonce, "hash": old})
    assert response.status_code == 401
    # Shown once: reloading the page does not show the secret again.
    page.goto(f"/console/org/1/users?user={user_id}")
    assert secret not in page.content()


def invite(page: Any, org_name: str, name: str, email: str, role: str) -> str:
    """As the signed-in Owner: create an org under Root, invite a user into it; the one-time link shown."""
    page.goto("/console/org/1/orgs")
    page.get_by_label(re.compile("New organization under")).fill(org_name)
    page.get_by_role("button", name="Create organization").click()
    page.get_by_role("link", name="Users").click()
    if not page.get_by_label("Name").is_visible():  # folded away once the org has users
        page.get_by_text("Invite a user").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Role").select_option(role)
    page.get_by_role("button", name="Invite").click()
    link = page.get_by_role("textbox", name="Link").input_value()
    shot(page, "admin-users-invited")
    return link


def test_create_org_invite_user_who_sets_password_and_signs_in_with_the_role(new_page: Any, hub: Any) -> None:
    owner = owner_page(new_page(), hub)
    link = invite(owner, "Acme EMEA", "Ada Admin", "ada@example.com", "Admin")
    assert owner.get_by_role("complementary").get_by_role("link", name="Acme EMEA").is_visible()  # in the org tree
    ada = new_page()
    set_password_and_enter(ada, link, "ada's long password")
    ada.goto("/console/account")
    assert ada.get_by_text("Admin", exact=True).first.is_visible()
    shot(ada, "account-settings")
    # Signed out and in again with the new password.
    ada.get_by_role("button", name="Sign out").first.click()
    ada.wait_for_url("**/console/signin")
    sign_in(ada, "ada@example.com", "ada's long password")
    ada.wait_for_url("**/console/org/**")
    ada.goto("/console/account")
    assert "ada@example.com" in ada.content()
    # Ada sees only her subtree: Root is not in her tree.
    assert ada.get_by_role("complementary").get_by_role("link", name="Root").count() == 0


def test_member_sees_no_owner_actions_and_a_forged_post_changes_nothing(new_page: Any, hub: Any) -> None:
    owner = owner_page(new_page(), hub)
    link = invite(owner, "Team", "Mo Member", "mo@example.com", "Member")
    mo = new_page()
    set_password_and_enter(mo, link)
    mo.goto("/console/org/1/users")
    assert mo.get_by_role("heading", name="Not found").is_visible()  # Root is outside Mo's subtree
    team = re.search(r"/console/org/(\d+)/", owner.url)
    assert team
    mo.goto(f"/console/org/{team.group(1)}/users")
    mo.get_by_role("link", name=re.compile("Mo Member.*mo@example.com")).click()
    shot(mo, "member-users")
    for label in ("Generate key", "Invite", "Delete user", "Reset password"):
        assert mo.get_by_role("button", name=label).count() == 0, label
    assert mo.get_by_role("link", name="Manage organizations").count() == 0
    # A hand-made POST with Mo's own valid CSRF token: the services refuse it, nothing changes.
    csrf = mo.locator("input[name=csrf]").first.input_value()
    user_id = re.search(r"user=(\d+)", mo.url)
    assert user_id
    response = mo.request.post(f"/console/user/{user_id.group(1)}/key", form={"csrf": csrf})
    assert response.status == 403
    response = mo.request.post(f"/console/org/{team.group(1)}/orgs", form={"csrf": csrf, "name": "Mo's org"})
    assert response.status == 403
    owner.goto(f"/console/org/{team.group(1)}/orgs")
    assert "Mo&#39;s org" not in owner.content() and "Mo's org" not in owner.content()


def test_a_post_without_the_csrf_token_is_refused(page: Any, hub: Any) -> None:
    owner_page(page, hub)
    response = page.request.post("/console/org/1/orgs", form={"name": "Forged"})
    assert response.status == 403
    assert "did not come from this console" in response.text()
    page.goto("/console/org/1/orgs")
    assert page.get_by_role("link", name="Forged").count() == 0


def test_sign_out(page: Any, hub: Any) -> None:
    owner_page(page, hub)
    page.get_by_role("button", name="Sign out").first.click()
    page.wait_for_url("**/console/signin")
    assert page.get_by_text("You are signed out.").is_visible()
    shot(page, "sign-in")
    page.goto("/console/account")
    page.wait_for_url("**/console/signin?next=**")
    sign_in(page, "owner@ihub.local", "wrong password!")
    assert page.get_by_text("wrong email or password").is_visible()
    sign_in(page, "owner@ihub.local", PASSWORD)
    page.wait_for_url("**/console/org/**")
