"""The trigger page: a generated private key is shown once, registered and revoked keys, enabling the client,
Run now, and what a Member may not do, through the console as a browser uses it (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from console_flows import ECHO, HOOKED, console_user, flow_id, input_value, make_project, textarea
from console_kit import Browser, csrf_in
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from incoming_support import GRANT, sign
from sqlalchemy import func, select

from ihub.incoming.models import TriggerClient, TriggerKey
from ihub.runs.models import Run

pytestmark = pytest.mark.anyio


def key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def assertion(private_pem: str, iss: str, sub: str, aud: str) -> str:
    now = int(time.time())
    claims = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    return sign(private_pem, claims)


async def exchange(client: httpx.AsyncClient, token_url: str, signed: str) -> httpx.Response:
    return await client.post(
        token_url.removeprefix("http://testserver"), json={"grant_type": GRANT, "assertion": signed}
    )


async def count(app: Any, model: Any) -> int:
    async with app.state.context.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_generated_key_is_shown_once_and_works(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    project = await make_project(client, auth, [HOOKED])
    flow = flow_id(project, "hooked")
    page = f"/console/flow/{flow}/trigger"
    empty = (await owner_browser.page(page)).text
    assert "No trigger client yet." in empty and "Generate key" in empty

    response = await owner_browser.submit(page, f"{page}/generate", {})
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["cache-control"] == "no-store"
    private_pem = textarea(response.text, "private-key")
    assert private_pem and private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert 'data-download="#private-key" data-filename="privateKey.pem"' in response.text
    iss, sub, aud = (input_value(response.text, name) for name in ("claim-iss", "claim-sub", "claim-aud"))
    assert sub == str(flow) and aud == "http://testserver/prod/incoming/token"
    for env in ("prod", "test"):
        assert input_value(response.text, f"webhook-url-{env}") == f"http://testserver/{env}/incoming/webhook/jwt"
    # The samples carry the values.
    assert f'CLIENT_ID = "{iss}"' in response.text and f'const TOKEN_URL = "{aud}"' in response.text

    # A reload shows the client and its key, never the private key again; only the public key is stored.
    again = (await owner_browser.page(page)).text
    assert iss in again and "PRIVATE KEY" not in again and textarea(again, "private-key") is None
    async with app.state.context.sessions() as session:
        [stored] = (await session.scalars(select(TriggerKey))).all()
    assert stored.source == "generated" and stored.jwk is not None and "d" not in stored.jwk

    # The downloaded key works: token, then the webhook starts a run.
    token = await exchange(client, aud, assertion(private_pem, iss, sub, aud))
    assert token.status_code == 200, token.text
    hook = await client.post(
        "/prod/incoming/webhook/jwt",
        json={"summary": "from the page"},
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )
    assert hook.status_code == 202, hook.text
    runs_page = (await owner_browser.page(f"/console/project/{project['id']}/runs")).text
    assert f'href="/console/run/{hook.json()["runId"]}"' in runs_page


async def test_register_pem_rotate_and_revoke(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    project = await make_project(client, auth, [HOOKED])
    flow = flow_id(project, "hooked")
    page = f"/console/flow/{flow}/trigger"
    private_pem, public_pem = key_pair()

    refused = await owner_browser.submit(page, f"{page}/register", {"public_key": private_pem})
    assert refused.status_code == 303 and refused.headers["location"].endswith(page)
    assert "private key" in (await owner_browser.page(page)).text  # the flash says why
    assert await count(app, TriggerClient) == 0  # the unit of work rolled back

    registered = await owner_browser.submit(page, f"{page}/register", {"public_key": public_pem})
    assert registered.status_code == 303, registered.text
    shown = (await owner_browser.page(page)).text
    assert "Registered key" in shown
    iss, aud = input_value(shown, "claim-iss"), input_value(shown, "claim-aud")
    async with app.state.context.sessions() as session:
        [key] = (await session.scalars(select(TriggerKey))).all()
    assert key.kid in shown and key.source == "uploaded"
    assert (await exchange(client, aud, assertion(private_pem, iss, str(flow), aud))).status_code == 200

    # Rotation: a second key for the same client, the first still valid until revoked.
    rotated = await owner_browser.submit(page, f"{page}/generate", {"iss": iss})
    assert rotated.status_code == 200 and textarea(rotated.text, "private-key")
    assert await count(app, TriggerClient) == 1 and await count(app, TriggerKey) == 2
    assert (await exchange(client, aud, assertion(private_pem, iss, str(flow), aud))).status_code == 200

    revoked = await owner_browser.submit(page, f"{page}/client/{iss}/revoke", {"kid": key.kid})
    assert revoked.status_code == 303
    after = (await owner_browser.page(page)).text
    assert "badge-revoked" in after and "is revoked" in after
    refused_token = await exchange(client, aud, assertion(private_pem, iss, str(flow), aud))
    assert refused_token.status_code in (400, 401), refused_token.text
    assert refused_token.json()["error"] == "invalid_grant"


async def test_disable_and_enable_the_client(
    client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    project = await make_project(client, auth, [HOOKED])
    flow = flow_id(project, "hooked")
    page = f"/console/flow/{flow}/trigger"
    issued = await owner_browser.submit(page, f"{page}/generate", {})
    iss = input_value(issued.text, "claim-iss")
    response = await owner_browser.submit(page, f"{page}/client/{iss}/enabled", {"enabled": "false"})
    assert response.status_code == 303
    shown = await client.get(f"/api/v1/flow/{flow}/trigger/jwt", headers=auth)
    assert shown.json()["triggers"][0]["enabled"] is False
    assert "Enable client" in (await owner_browser.page(page)).text
    await owner_browser.submit(page, f"{page}/client/{iss}/enabled", {"enabled": "true"})
    shown = await client.get(f"/api/v1/flow/{flow}/trigger/jwt", headers=auth)
    assert shown.json()["triggers"][0]["enabled"] is True


async def test_run_now_starts_a_run_and_refuses_invalid_json(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser
) -> None:
    project = await make_project(client, auth, [ECHO])
    flow = flow_id(project, "echo")
    page = f"/console/flow/{flow}/trigger"
    bad = await owner_browser.submit(page, f"/console/flow/{flow}/run", {"body": '{"n": 1,'})
    assert bad.status_code == 400
    assert "body is not valid JSON" in bad.text
    assert textarea(bad.text, "run-body") == '{"n": 1,'  # what was typed stays in the form
    assert await count(app, Run) == 0

    started = await owner_browser.submit(page, f"/console/flow/{flow}/run", {"body": '{"n": 41}'})
    assert started.status_code == 303, started.text
    location = started.headers["location"]
    assert location.startswith("/console/run/")
    run_id = location.rsplit("/", 1)[1]
    run_page = (await owner_browser.page(location)).text
    assert f"Run {run_id} started." in run_page
    listed = (await owner_browser.page(f"/console/project/{project['id']}/runs")).text
    assert f'href="/console/run/{run_id}"' in listed
    # The project page lists its newest runs too.
    assert f'href="/console/run/{run_id}"' in (await owner_browser.page(f"/console/project/{project['id']}")).text
    api_run = (await client.get(f"/api/v1/run/{run_id}", headers=auth)).json()["runs"][0]
    assert api_run["triggerType"] == "manual" and api_run["trigger"]["body"] == {"n": 41}


async def test_member_sees_no_key_actions_and_a_forged_post_changes_nothing(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], owner_browser: Browser, open_browser: Any
) -> None:
    project = await make_project(client, auth, [HOOKED])
    flow = flow_id(project, "hooked")
    page = f"/console/flow/{flow}/trigger"
    issued = await owner_browser.submit(page, f"{page}/generate", {})
    iss = input_value(issued.text, "claim-iss")
    async with app.state.context.sessions() as session:
        [key] = (await session.scalars(select(TriggerKey))).all()
    async with open_browser() as http:
        member = await console_user(app, client, auth, http, "1", "Member")
        seen = (await member.page(page)).text
        assert iss in seen  # a Member reads what a caller needs
        assert "Generate key" not in seen and "Revoke" not in seen and "Disable client" not in seen
        csrf = csrf_in(seen)
        for action, data in (
            (f"{page}/generate", {}),
            (f"{page}/register", {"public_key": key_pair()[1]}),
            (f"{page}/client/{iss}/revoke", {"kid": key.kid}),
            (f"{page}/client/{iss}/enabled", {"enabled": "false"}),
        ):
            response = await http.post(action, data={"csrf": csrf, **data})
            assert response.status_code == 403, (action, response.status_code)
        # Without the CSRF token, refused too.
        assert (await http.post(f"{page}/generate", data={})).status_code == 403
    assert await count(app, TriggerClient) == 1 and await count(app, TriggerKey) == 1
    shown = (await client.get(f"/api/v1/flow/{flow}/trigger/jwt", headers=auth)).json()["triggers"][0]
    assert shown["enabled"] is True and not shown["keys"][0]["revoked"]


async def test_a_flow_outside_the_viewers_subtree_is_not_found(
    app: Any, client: httpx.AsyncClient, auth: dict[str, str], open_browser: Any
) -> None:
    from console_flows import add_org

    project = await make_project(client, auth, [HOOKED])
    flow = flow_id(project, "hooked")
    sub = await add_org(client, auth)
    async with open_browser() as http:
        admin = await console_user(app, client, auth, http, sub, "Admin")
        await admin.page(f"/console/flow/{flow}/trigger", expect=404)
        csrf = csrf_in((await admin.page("/console/account")).text)
        assert (await http.post(f"/console/flow/{flow}/trigger/generate", data={"csrf": csrf})).status_code == 404
        assert (await http.post(f"/console/flow/{flow}/run", data={"csrf": csrf, "body": "{}"})).status_code == 404
    assert await count(app, TriggerClient) == 0 and await count(app, Run) == 0
