"""The trigger journey in a real browser against a real `ihub serve`: the first Owner generates a key on a flow's
trigger page and downloads it, a calling system (PyJWT + requests, as in the seed) signs an assertion with it and
posts to the webhook, and the run shows as succeeded on the runs page; then Replay, and Cancel of a waiting run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import requests
from browser_kit import api_project, owner_page, shot
from playwright.sync_api import expect

HOOKED = {
    "key": "hooked",
    "name": "Called by a system",
    "trigger": {"type": "jwt"},
    "steps": [
        {"id": "shape", "type": "map", "set": {"title": "{{ trigger.body.summary }}"}},
        {"id": "reply", "type": "respond", "status": 200, "body": {"title": "{{ vars.title }}"}},
    ],
}
WAITING = {"key": "waiting", "trigger": "manual", "steps": [{"id": "pause", "type": "delay", "seconds": 600}]}


def project_with_flows(hub: Any) -> dict[str, Any]:
    return api_project(hub, {"connections": [], "flows": [HOOKED, WAITING]})


def flow_of(project: dict[str, Any], key: str) -> str:
    return str(next(f["id"] for f in project["flows"] if f["key"] == key))


def test_generate_key_call_the_webhook_and_follow_the_run(page: Any, hub: Any, tmp_path: Path) -> None:
    owner_page(page, hub)
    project = project_with_flows(hub)
    hooked, waiting = flow_of(project, "hooked"), flow_of(project, "waiting")
    page.on("dialog", lambda dialog: dialog.accept())  # data-confirm prompts

    page.goto(f"/console/flow/{hooked}/trigger")
    expect(page.get_by_text("No trigger client yet.")).to_be_visible()
    shot(page, "trigger-empty")
    page.get_by_role("button", name="Generate key", exact=True).click()
    expect(page.get_by_role("heading", name="New private key for client")).to_be_visible()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download privateKey.pem").click()
    download = download_info.value
    assert download.suggested_filename == "privateKey.pem"
    key_file = tmp_path / "privateKey.pem"
    download.save_as(key_file)
    private_key = key_file.read_text()
    assert private_key.startswith("-----BEGIN PRIVATE KEY-----")
    shot(page, "trigger-key-issued")

    iss = page.locator("#claim-iss").input_value()
    sub = page.locator("#claim-sub").input_value()
    aud = page.locator("#claim-aud").input_value()
    webhook = page.locator("#webhook-url-prod").input_value()
    assert sub == hooked and aud == f"{hub.url}/prod/incoming/token"
    # The copy button puts the value on the clipboard.
    page.locator('button[data-copy="#claim-iss"]').click()
    assert page.evaluate("navigator.clipboard.readText()") == iss

    # The calling system, as the seed's sample: PyJWT + requests with the downloaded key.
    now = int(time.time())
    claims = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "exp": now + 1200}
    assertion = jwt.encode(claims, private_key, algorithm="RS256", headers={"alg": "RS256", "typ": "JWT"})
    grant = requests.post(aud, json={"grant_type": "urn:ihub:jwt:bearer", "assertion": assertion}, timeout=10)
    assert grant.status_code == 200, grant.text
    access = grant.json()["access_token"]
    hook = requests.post(
        webhook, json={"summary": "Printer on fire"}, headers={"Authorization": f"Bearer {access}"}, timeout=10
    )
    assert hook.status_code == 202, hook.text
    run_id = hook.json()["runId"]

    # A reload of the trigger page never shows the private key again.
    page.goto(f"/console/flow/{hooked}/trigger")
    expect(page.locator("#private-key")).to_have_count(0)
    expect(page.get_by_text(iss).first).to_be_visible()
    shot(page, "trigger-page")

    page.goto(f"/console/project/{project['id']}/runs")
    row = page.locator("tr", has=page.locator(f'a[href="/console/run/{run_id}"]'))
    expect(row.locator(".badge-succeeded")).to_be_visible(timeout=20_000)
    shot(page, "runs-list")
    row.get_by_role("link", name=f"#{run_id}").click()
    expect(page.get_by_role("heading", name=f"Run #{run_id}")).to_be_visible()
    expect(page.locator("pre.json").first).to_contain_text("Printer on fire")
    page.get_by_text("Request and response").first.click()
    shot(page, "run-detail")

    page.get_by_label("Replay on").select_option("original")
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_text(f"replays run {run_id}")).to_be_visible()
    expect(page.locator("h1 .badge-succeeded")).to_be_visible(timeout=20_000)
    assert page.url.rsplit("/", 1)[1] != run_id
    shot(page, "run-replayed")

    # Run now on a flow that waits: the page refreshes itself until Cancel ends the run.
    page.goto(f"/console/flow/{waiting}/trigger")
    page.get_by_label("Trigger body (JSON)").fill('{"why": "cancel me"}')
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
    expect(page.locator("[data-refresh]")).to_have_count(1)
    expect(page.locator(".step .badge-waiting")).to_be_visible(timeout=20_000)
    shot(page, "run-waiting")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("h1 .badge-cancelled")).to_be_visible()
    expect(page.locator("[data-refresh]")).to_have_count(0)
    shot(page, "run-cancelled")

    page.goto("/console/org/1/runs?status=cancelled")
    expect(page.locator("tbody tr")).to_have_count(1)
    shot(page, "runs-filtered")
    page.goto("/console/system")
    expect(page.get_by_role("heading", name="System")).to_be_visible()
    shot(page, "system")
