"""Every console form, found from the app's own routes, leaves exactly one audit entry when it changes something:
channel console, the signed-in Owner as actor, the route as action, the organization of the rows it changed,
and no secret value (connection secrets, generated keys, signing secrets, passwords, one-time links) anywhere.
A form refused (a forged CSRF token, another site's Origin, a Member's forbidden action, an input error) leaves
none.

A new console POST route fails `test_every_console_form_is_walked` until it gets a step in STEPS below: an
example submission and a check that its change happened, or, for a form that is not a change by design, the
reason (it is still submitted, and must leave no entry).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from audit_kit import count, entries
from console_flows import input_value, textarea
from console_kit import PASSWORD, csrf_in, signed_in
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from api_helpers import Api
from ihub.accounts.models import ConsoleSession, UserPassword
from ihub.app import create_app
from ihub.audit.models import AuditEntry
from ihub.config import Settings
from ihub.events.models import EventDelivery, EventEndpoint
from ihub.flows.models import Flow
from ihub.incoming.models import TriggerClient, TriggerKey
from ihub.oauth.models import OAuthState
from ihub.projects.models import Connection, Project
from ihub.provisioning.models import ApiKey
from ihub.replays.models import ReplayBatch
from ihub.runs.models import Run
from ihub.templates.models import Template
from ihub.tenancy.models import Organization, User

pytestmark = pytest.mark.anyio

PUBLIC_URL = "http://testserver"
OWNER_EMAIL = "owner@ihub.local"
NEW_PASSWORD = "a different and longer passphrase " + uuid.uuid4().hex
JIRA_TOKEN = "jira-console-secret-" + uuid.uuid4().hex
JIRA_TOKEN_2 = "jira-console-rotated-" + uuid.uuid4().hex
OAUTH_CLIENT_SECRET = "oauth-console-client-secret-" + uuid.uuid4().hex
# A port nothing listens on: the connection test's probe is refused at once and records `error`.
CLOSED = "http://127.0.0.1:9"

DEFINITION = """\
connections:
  - {id: jira, type: jira, name: Jira}
  - {id: crm, type: oauth2_authorization_code, name: CRM}
flows:
  - key: f
    name: %s
    trigger: {type: jwt}
    steps:
      - {id: call, type: http, connection: jira, path: /x}
"""


# Forms post; any other writing method under /console/ would need a step all the same.
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def console_post_routes(app: Any) -> set[str]:
    """Every POST (or other writing) route under /console/, as declared with its prefixes. Routers included in
    routers are walked (FastAPI keeps them as included-router entries whose routes it resolves itself)."""

    def walk(routes: Any) -> Iterator[Any]:
        for route in routes:
            nested = getattr(route, "effective_route_contexts", None)
            yield from (nested() if nested is not None else [route])

    return {
        route.path
        for route in walk(app.routes)
        if route.path.startswith("/console/") and MUTATING & set(getattr(route, "methods", None) or ())
    }


def console_client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40002))
    return httpx.AsyncClient(
        transport=transport, base_url=PUBLIC_URL, follow_redirects=False, headers={"user-agent": "walk-browser"}
    )


@dataclass
class Walk:
    """The signed-in Owner's browser and what earlier steps made (ids, and every secret shown on the way)."""

    app: Any
    http: httpx.AsyncClient
    api: Api
    owner_id: int
    csrf: str = ""
    ids: dict[str, Any] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    # Other browsers a step opened (closed at the end).
    others: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    async def post(
        self, action: str, data: dict[str, Any] | None = None, *, files: Any = None, expect: int = 303
    ) -> httpx.Response:
        """Submit a form as the page's button does: the session's CSRF token in the body."""
        response = await self.http.post(action, data={"csrf": self.csrf, **(data or {})}, files=files)
        assert response.status_code == expect, (action, response.status_code, response.text[:2000])
        if expect == 303:
            # An error flash on a redirect is a refused action presented nicely; a walked form must succeed.
            assert '"kind": "error"' not in response.headers.get("set-cookie", ""), (action, response.headers)
        return response

    async def one(self, statement: Any) -> Any:
        async with self.app.state.context.sessions() as session:
            return (await session.execute(statement)).scalar_one_or_none()

    async def all(self, statement: Any) -> list[Any]:
        async with self.app.state.context.sessions() as session:
            return list((await session.scalars(statement)).all())

    async def row(self, model: Any, row_id: Any) -> Any:
        async with self.app.state.context.sessions() as session:
            return await session.get(model, int(row_id))

    def keep(self, *secrets: str) -> None:
        assert all(secrets), "a step expected a secret on its page"
        self.secrets.extend(secrets)


def location_id(response: httpx.Response, pattern: str) -> int:
    found = re.fullmatch(pattern, response.headers["location"])
    assert found, response.headers["location"]
    return int(found.group(1))


# -- the steps: each submits one form, checks that its change happened, and returns the organization the entry
# -- belongs to (the deepest one holding every changed row; ihub.audit.recorder) -------------------------------


async def create_org(w: Walk) -> int:
    response = await w.post("/console/org/1/orgs", {"name": "walk"})
    w.ids["org"] = location_id(response, r"/console/org/(\d+)/orgs")
    org = await w.row(Organization, w.ids["org"])
    assert (org.name, org.parent_id) == ("walk", 1)
    return int(w.ids["org"])


async def rename_org(w: Walk) -> int:
    await w.post(f"/console/org/{w.ids['org']}/rename", {"name": "walk-renamed"})
    assert (await w.row(Organization, w.ids["org"])).name == "walk-renamed"
    return int(w.ids["org"])


async def move_org(w: Walk) -> int:
    await w.post(f"/console/org/{w.ids['moved']}/move", {"parent": str(w.ids["org"])})
    moved = await w.row(Organization, w.ids["moved"])
    assert moved.parent_id == w.ids["org"]
    # From /1/<moved>/ to /1/<walk>/<moved>/: the organization holding both is the root.
    return 1


async def invite_user(w: Walk) -> int:
    email = f"invited-{uuid.uuid4().hex[:8]}@example.com"
    response = await w.post(
        f"/console/org/{w.ids['org']}/users", {"name": "Invited", "email": email, "role": "Member"}, expect=200
    )
    w.ids["user"] = await w.one(select(User.id).where(User.email == email))
    assert w.ids["user"] is not None
    link = input_value(response.text, "signin-link")
    w.ids["invite"] = urlsplit(link).path
    w.keep(link.rsplit("/", 1)[1])
    return int(w.ids["org"])


async def redeem_invitation(w: Walk) -> int:
    """Choosing a password through the invitation link, in the invited person's own browser."""
    invited = w.others["invited"] = console_client(w.app)
    page = await invited.get(w.ids["invite"])
    assert page.status_code == 200, page.text[:500]
    password = "invited person's passphrase " + uuid.uuid4().hex
    response = await invited.post(
        w.ids["invite"], data={"csrf": csrf_in(page.text), "password": password, "confirm": password}
    )
    assert response.status_code == 303 and response.headers["location"] == "/console/", response.text[:500]
    w.keep(password)
    assert await w.row(UserPassword, w.ids["user"]) is not None
    return 0


async def generate_user_key(w: Walk) -> int:
    response = await w.post(f"/console/user/{w.ids['user']}/key", expect=200)
    w.keep(input_value(response.text, "secret-key"))
    assert await w.one(select(ApiKey.id).where(ApiKey.user_id == w.ids["user"])) is not None
    return int(w.ids["org"])


async def reset_password_link(w: Walk) -> int:
    response = await w.post(f"/console/user/{w.ids['user']}/link", expect=200)
    w.keep(input_value(response.text, "signin-link").rsplit("/", 1)[1])
    # A reset ends the password at once.
    assert await w.row(UserPassword, w.ids["user"]) is None
    return int(w.ids["org"])


async def change_role(w: Walk) -> int:
    await w.post(f"/console/user/{w.ids['user']}/role", {"role": "Admin"})
    assert (await w.row(User, w.ids["user"])).role == "Admin"
    return int(w.ids["org"])


async def change_own_password(w: Walk) -> int:
    before = (await w.row(UserPassword, w.owner_id)).hash
    await w.post("/console/account/password", {"current": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert (await w.row(UserPassword, w.owner_id)).hash != before
    return 1


async def owner_sessions(w: Walk) -> int:
    return int(
        await w.one(select(func.count()).select_from(ConsoleSession).where(ConsoleSession.user_id == w.owner_id))
    )


async def sign_in(w: Walk) -> int:
    """The Owner signs in again in a second browser (with the new password), for `end_other_sessions` to end."""
    second = w.others["second"] = console_client(w.app)
    page = await second.get("/console/signin")
    before = await owner_sessions(w)
    response = await second.post(
        "/console/signin", data={"csrf": csrf_in(page.text), "email": OWNER_EMAIL, "password": NEW_PASSWORD}
    )
    assert response.status_code == 303, response.text[:500]
    assert await owner_sessions(w) == before + 1
    w.keep(second.cookies["ihub_session"])
    return 0


async def end_other_sessions(w: Walk) -> int:
    await w.post("/console/account/sessions/end-others")
    assert await owner_sessions(w) == 1
    assert (await w.others["second"].get("/console/account")).status_code == 303  # back to the sign-in page
    return 0


async def generate_own_key(w: Walk) -> int:
    before = await w.one(select(ApiKey.secret_sealed).where(ApiKey.user_id == w.owner_id))
    response = await w.post("/console/account/key", expect=200)
    w.keep(input_value(response.text, "secret-key"))
    assert await w.one(select(ApiKey.secret_sealed).where(ApiKey.user_id == w.owner_id)) != before
    return 1


async def create_template(w: Walk) -> int:
    response = await w.post(
        f"/console/org/{w.ids['org']}/templates",
        {"name": "walk-template", "description": "d", "definition": DEFINITION % "v1"},
    )
    w.ids["template"] = location_id(response, r"/console/template/(\d+)")
    assert (await w.row(Template, w.ids["template"])).org_id == w.ids["org"]
    return int(w.ids["org"])


async def create_project(w: Walk) -> int:
    response = await w.post(
        f"/console/org/{w.ids['org']}/projects", {"name": "walk-project", "template": str(w.ids["template"])}
    )
    w.ids["project"] = location_id(response, r"/console/project/(\d+)/setup")
    w.ids["flow"] = await w.one(select(Flow.id).where(Flow.project_id == w.ids["project"]))
    assert w.ids["flow"] is not None
    return int(w.ids["org"])


async def connection(w: Walk, slot: str) -> Connection:
    async with w.app.state.context.sessions() as session:
        found = await session.scalar(
            select(Connection).where(Connection.project_id == w.ids["project"], Connection.slot_id == slot)
        )
    assert found is not None
    return found


async def save_setup(w: Walk) -> int:
    before = (await connection(w, "jira")).secrets_sealed
    await w.post(
        f"/console/project/{w.ids['project']}/setup",
        {
            "jira.siteUrl": CLOSED,
            "jira.email": "bot@example.com",
            "jira.apiToken": JIRA_TOKEN,
            "crm.baseUrl": CLOSED,
            "settings": "queue: walk\n",
        },
    )
    jira = await connection(w, "jira")
    assert jira.config["siteUrl"] == CLOSED and jira.secrets_sealed != before
    assert (await w.row(Project, w.ids["project"])).settings == {"queue": "walk"}
    return int(w.ids["org"])


async def save_connection(w: Walk) -> int:
    before = (await connection(w, "jira")).secrets_sealed
    await w.post(
        f"/console/project/{w.ids['project']}/connections",
        {"slot": "jira", "jira.siteUrl": CLOSED, "jira.email": "ops@example.com", "jira.apiToken": JIRA_TOKEN_2},
    )
    jira = await connection(w, "jira")
    assert jira.config["email"] == "ops@example.com" and jira.secrets_sealed != before
    return int(w.ids["org"])


async def probe_connection(w: Walk) -> int:
    response = await w.http.post(f"/console/project/{w.ids['project']}/connections/jira/test", data={"csrf": w.csrf})
    # The probe is refused (nothing listens there): the page says so, and the outcome is recorded.
    assert response.status_code == 303, response.text[:500]
    assert (await connection(w, "jira")).status == "error"
    return int(w.ids["org"])


async def save_settings(w: Walk) -> int:
    await w.post(f"/console/project/{w.ids['project']}/settings", {"settings": "queue: other\n"})
    assert (await w.row(Project, w.ids["project"])).settings == {"queue": "other"}
    return int(w.ids["org"])


async def save_details(w: Walk) -> int:
    await w.post(f"/console/project/{w.ids['project']}/details", {"name": "walk-project-2", "description": "x"})
    assert (await w.row(Project, w.ids["project"])).name == "walk-project-2"
    return int(w.ids["org"])


async def update_template(w: Walk) -> int:
    await w.post(
        f"/console/template/{w.ids['template']}/edit",
        {"name": "walk-template", "description": "d", "definition": DEFINITION % "v2"},
    )
    assert (await w.row(Template, w.ids["template"])).version == 2
    return int(w.ids["org"])


async def upgrade_project(w: Walk) -> int:
    await w.post(f"/console/project/{w.ids['project']}/upgrade", {"version": ""})
    assert (await w.row(Project, w.ids["project"])).template_version == 2
    return int(w.ids["org"])


async def connect(w: Walk) -> int:
    response = await w.post(f"/console/project/{w.ids['project']}/connection/crm/connect")
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == CLOSED + "/authorize"
    w.keep(parse_qs(target.query)["state"][0])
    assert await w.one(select(OAuthState.id).where(OAuthState.project_id == w.ids["project"])) is not None
    return int(w.ids["org"])


async def import_template(w: Walk) -> int:
    document = {"name": "walk-imported", "description": "", "definition": {"connections": [], "flows": []}}
    response = await w.post(
        f"/console/org/{w.ids['org']}/templates/import",
        files={"file": ("walk.json", json.dumps(document).encode(), "application/json")},
    )
    w.ids["imported"] = location_id(response, r"/console/template/(\d+)")
    assert (await w.row(Template, w.ids["imported"])).name == "walk-imported"
    return int(w.ids["org"])


async def delete_template(w: Walk) -> int:
    await w.post(f"/console/template/{w.ids['imported']}/delete")
    assert await w.row(Template, w.ids["imported"]) is None
    return int(w.ids["org"])


async def trigger_keys(w: Walk) -> list[TriggerKey]:
    return await w.all(
        select(TriggerKey)
        .join(TriggerClient, TriggerClient.id == TriggerKey.client_pk)
        .where(TriggerClient.flow_id == w.ids["flow"])
        .order_by(TriggerKey.id)
    )


async def generate_trigger_key(w: Walk) -> int:
    response = await w.post(f"/console/flow/{w.ids['flow']}/trigger/generate", expect=200)
    private_key = textarea(response.text, "private-key")
    assert private_key and "PRIVATE KEY" in private_key
    w.keep(private_key, private_key.splitlines()[1])
    w.ids["iss"] = await w.one(select(TriggerClient.client_id).where(TriggerClient.flow_id == w.ids["flow"]))
    [key] = await trigger_keys(w)
    w.ids["kid"] = key.kid
    return int(w.ids["org"])


async def register_trigger_key(w: Walk) -> int:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    await w.post(f"/console/flow/{w.ids['flow']}/trigger/register", {"public_key": pem, "iss": w.ids["iss"]})
    assert len(await trigger_keys(w)) == 2
    return int(w.ids["org"])


async def disable_trigger_client(w: Walk) -> int:
    await w.post(f"/console/flow/{w.ids['flow']}/trigger/client/{w.ids['iss']}/enabled", {"enabled": "false"})
    assert await w.one(select(TriggerClient.enabled).where(TriggerClient.client_id == w.ids["iss"])) is False
    return int(w.ids["org"])


async def revoke_trigger_key(w: Walk) -> int:
    await w.post(f"/console/flow/{w.ids['flow']}/trigger/client/{w.ids['iss']}/revoke", {"kid": w.ids["kid"]})
    revoked = [key for key in await trigger_keys(w) if key.kid == w.ids["kid"]]
    assert revoked and revoked[0].revoked_at is not None
    return int(w.ids["org"])


async def run_now(w: Walk) -> int:
    response = await w.post(f"/console/flow/{w.ids['flow']}/run", {"body": '{"n": 1}'})
    w.ids["run"] = location_id(response, r"/console/run/(\d+)")
    assert (await w.row(Run, w.ids["run"])).flow_id == w.ids["flow"]
    return int(w.ids["org"])


async def replay_run(w: Walk) -> int:
    response = await w.post(f"/console/run/{w.ids['run']}/replay", {"version": "original"})
    replayed = location_id(response, r"/console/run/(\d+)")
    assert replayed != w.ids["run"] and (await w.row(Run, replayed)).flow_id == w.ids["flow"]
    return int(w.ids["org"])


async def cancel_run(w: Walk) -> int:
    await w.post(f"/console/run/{w.ids['run']}/cancel")
    assert (await w.row(Run, w.ids["run"])).status == "cancelled"
    return int(w.ids["org"])


async def start_replay(w: Walk) -> int:
    # Without a worker in these tests the batch stays pending, so it can be paused, resumed and cancelled.
    response = await w.post(
        f"/console/org/{w.ids['org']}/replays",
        {"flow": str(w.ids["flow"]), "status": "cancelled", "version": "original", "rate": "1"},
    )
    w.ids["replay"] = location_id(response, r"/console/replay/(\d+)")
    assert (await w.row(ReplayBatch, w.ids["replay"])).selected == 1
    return int(w.ids["org"])


def change_replay(action: str, status: str) -> Callable[[Walk], Awaitable[int]]:
    async def step(w: Walk) -> int:
        await w.post(f"/console/replay/{w.ids['replay']}/{action}")
        assert (await w.row(ReplayBatch, w.ids["replay"])).status == status
        return int(w.ids["org"])

    return step


async def create_endpoint(w: Walk) -> int:
    response = await w.post(
        f"/console/org/{w.ids['org']}/events",
        {"url": CLOSED + "/hook", "description": "walk", "eventTypes": ["run.failed"]},
        expect=200,
    )
    w.keep(input_value(response.text, "signing-secret"))
    w.ids["endpoint"] = await w.one(select(EventEndpoint.id).where(EventEndpoint.org_id == w.ids["org"]))
    assert w.ids["endpoint"] is not None
    return int(w.ids["org"])


async def rotate_endpoint_secret(w: Walk) -> int:
    before = (await w.row(EventEndpoint, w.ids["endpoint"])).secret_sealed
    response = await w.post(f"/console/event-endpoint/{w.ids['endpoint']}/rotate", expect=200)
    w.keep(input_value(response.text, "signing-secret"))
    assert (await w.row(EventEndpoint, w.ids["endpoint"])).secret_sealed != before
    return int(w.ids["org"])


async def send_test_event(w: Walk) -> int:
    await w.post(f"/console/event-endpoint/{w.ids['endpoint']}/test")
    w.ids["delivery"] = await w.one(select(EventDelivery.id).where(EventDelivery.endpoint_id == w.ids["endpoint"]))
    assert w.ids["delivery"] is not None
    return int(w.ids["org"])


async def resend_delivery(w: Walk) -> int:
    before = await w.row(EventDelivery, w.ids["delivery"])
    await w.post(f"/console/event-delivery/{w.ids['delivery']}/resend")
    after = await w.row(EventDelivery, w.ids["delivery"])
    # Due now again, with a fresh retry window.
    assert after.status == "pending" and after.give_up_at > before.give_up_at
    return int(w.ids["org"])


async def disable_endpoint(w: Walk) -> int:
    await w.post(f"/console/event-endpoint/{w.ids['endpoint']}/enabled", {"enabled": "false"})
    assert (await w.row(EventEndpoint, w.ids["endpoint"])).enabled is False
    return int(w.ids["org"])


async def delete_endpoint(w: Walk) -> int:
    await w.post(f"/console/event-endpoint/{w.ids['endpoint']}/delete")
    assert await w.row(EventEndpoint, w.ids["endpoint"]) is None
    return int(w.ids["org"])


async def delete_user(w: Walk) -> int:
    await w.post(f"/console/user/{w.ids['user']}/delete")
    assert await w.row(User, w.ids["user"]) is None
    return int(w.ids["org"])


async def delete_project(w: Walk) -> int:
    await w.post(f"/console/project/{w.ids['project']}/delete")
    assert await w.row(Project, w.ids["project"]) is None
    return int(w.ids["org"])


async def delete_org(w: Walk) -> int:
    await w.post(f"/console/org/{w.ids['moved']}/delete", {"cascade": "yes"})
    assert await w.row(Organization, w.ids["moved"]) is None
    # The deleted organization's own row names it (its Owners above, of /1/<walk>/, read the entry).
    return int(w.ids["moved"])


async def sign_out(w: Walk) -> int:
    await w.post("/console/signout")
    assert await owner_sessions(w) == 0
    return 0


Step = Callable[[Walk], Awaitable[int]]


@dataclass(frozen=True)
class Form:
    route: str
    step: Step
    # Why this form changes nothing an audit entry records (it must then leave none); None: exactly one entry.
    not_a_change: str | None = None


# In the order they run: later steps use what earlier ones made.
STEPS: list[Form] = [
    Form("/console/org/{org_id}/orgs", create_org),
    Form("/console/org/{org_id}/rename", rename_org),
    Form("/console/org/{org_id}/move", move_org),
    Form("/console/org/{org_id}/users", invite_user),
    Form(
        "/console/password/{token}",
        redeem_invitation,
        "choosing a password through a one-time link: no one is signed in yet (docs/operations.md)",
    ),
    Form("/console/user/{user_id}/key", generate_user_key),
    Form("/console/user/{user_id}/link", reset_password_link),
    Form("/console/user/{user_id}/role", change_role),
    Form("/console/account/password", change_own_password),
    Form("/console/signin", sign_in, "authentication, not a change (like POST /api/v1/token)"),
    Form(
        "/console/account/sessions/end-others",
        end_other_sessions,
        "console sessions are bookkeeping, not configuration (recorder.UNAUDITED_TABLES)",
    ),
    Form("/console/account/key", generate_own_key),
    Form("/console/org/{org_id}/templates", create_template),
    Form("/console/org/{org_id}/projects", create_project),
    Form("/console/project/{project_id}/setup", save_setup),
    Form("/console/project/{project_id}/connections", save_connection),
    Form("/console/project/{project_id}/connections/{slot_id}/test", probe_connection),
    Form("/console/project/{project_id}/settings", save_settings),
    Form("/console/project/{project_id}/details", save_details),
    Form("/console/template/{template_id}/edit", update_template),
    Form("/console/project/{project_id}/upgrade", upgrade_project),
    Form("/console/project/{project_id}/connection/{slot}/connect", connect),
    Form("/console/org/{org_id}/templates/import", import_template),
    Form("/console/template/{template_id}/delete", delete_template),
    Form("/console/flow/{flow_id}/trigger/generate", generate_trigger_key),
    Form("/console/flow/{flow_id}/trigger/register", register_trigger_key),
    Form("/console/flow/{flow_id}/trigger/client/{iss}/enabled", disable_trigger_client),
    Form("/console/flow/{flow_id}/trigger/client/{iss}/revoke", revoke_trigger_key),
    Form("/console/flow/{flow_id}/run", run_now),
    Form("/console/run/{run_id}/replay", replay_run),
    Form("/console/run/{run_id}/cancel", cancel_run),
    Form("/console/org/{org_id}/replays", start_replay),
    Form("/console/replay/{replay_id}/{action}", change_replay("pause", "paused")),
    Form("/console/replay/{replay_id}/{action}", change_replay("resume", "pending")),
    Form("/console/replay/{replay_id}/{action}", change_replay("cancel", "cancelled")),
    Form("/console/org/{org_id}/events", create_endpoint),
    Form("/console/event-endpoint/{endpoint_id}/rotate", rotate_endpoint_secret),
    Form("/console/event-endpoint/{endpoint_id}/test", send_test_event),
    Form("/console/event-delivery/{delivery_id}/resend", resend_delivery),
    Form("/console/event-endpoint/{endpoint_id}/enabled", disable_endpoint),
    Form("/console/event-endpoint/{endpoint_id}/delete", delete_endpoint),
    Form("/console/user/{user_id}/delete", delete_user),
    Form("/console/project/{project_id}/delete", delete_project),
    Form("/console/org/{org_id}/delete", delete_org),
    Form("/console/signout", sign_out, "ends the console session only: bookkeeping (recorder.UNAUDITED_TABLES)"),
]


def test_every_console_form_is_walked(tmp_path: Path) -> None:
    # The routes need no database: once, not per backend.
    settings = Settings(data_dir=tmp_path, secret_key="k" * 48, _env_file=None)
    found = console_post_routes(create_app(settings, run_worker=False))
    walked = {form.route for form in STEPS}
    assert len(found) > 40, "the console's routes were not found (did FastAPI change how it keeps routers?)"
    missing = found - walked
    assert not missing, f"add a step to STEPS (a submission and its check, or a reason) for {sorted(missing)}"
    assert not walked - found, f"STEPS names routes the console no longer has: {sorted(walked - found)}"


def text_of(written: list[AuditEntry]) -> str:
    return json.dumps(
        [(e.changes, e.actor_name, e.action, e.target_type, e.target_id, e.user_agent, e.address) for e in written]
    )


async def test_each_console_form_leaves_exactly_one_entry(app, api: Api, owner) -> None:  # noqa: ANN001
    # Set up through the API beforehand: the Connect step needs an OAuth app for the template's provider (the
    # console has no form for it).
    oauth_app = {
        "clientId": "client-1",
        "clientSecret": OAUTH_CLIENT_SECRET,
        "authorizeUrl": CLOSED + "/authorize",
        "tokenUrl": CLOSED + "/token",
    }
    put = await api.client.put("/api/v1/oauth/app/org/1/generic", json=oauth_app, headers=api.auth)
    assert put.status_code == 200, put.text
    owner_id = int(owner.user_id)
    async with console_client(app) as http:
        await signed_in(app, http, owner_id)
        walk = Walk(app, http, api, owner_id)
        # An organization to move into the walk's own (made beforehand: only console posts are measured).
        walk.ids["moved"] = int(await api.add_org("moved", "1"))
        walk.csrf = csrf_in((await http.get("/console/account")).text)
        walk.keep(walk.csrf, http.cookies["ihub_session"], PASSWORD, NEW_PASSWORD, JIRA_TOKEN, JIRA_TOKEN_2)
        try:
            for form in STEPS:
                before = await count(app)
                org_id = await form.step(walk)
                written = (await entries(app))[before:]
                label = f"POST {form.route} ({form.step.__name__})"
                if form.not_a_change:
                    assert written == [], f"{label} is not a change, yet left {len(written)} entries"
                    continue
                assert len(written) == 1, f"{label} left {len(written)} entries: {[e.action for e in written]}"
                (entry,) = written
                assert entry.action == f"POST {form.route}", label
                assert entry.channel == "console", label
                assert (entry.actor_user_id, entry.actor_name) == (owner_id, OWNER_EMAIL), label
                assert (entry.address, entry.user_agent) == ("127.0.0.1", "walk-browser"), label
                assert entry.org_id == org_id, f"{label}: entry of organization {entry.org_id}, expected {org_id}"
                assert entry.changes, label
        finally:
            for other in walk.others.values():
                await other.aclose()
    # No secret value anywhere in the log: link tokens, API key secrets, passwords, the generated private key,
    # connection secrets, endpoint signing secrets, the OAuth state, the session's cookie and CSRF token ...
    written = await entries(app)
    text = text_of(written)
    for secret in [*walk.secrets, OAUTH_CLIENT_SECRET]:
        assert secret not in text, secret[:12]
        assert json.dumps(secret)[1:-1] not in text, secret[:12]  # nor JSON-escaped (a PEM's newlines)
    # ... nor their sealed or hashed forms (key and signing secrets, link and state digests, password hashes) ...
    for entry in written:
        for change in entry.changes:
            for values in (change["before"] or {}, change["after"] or {}):
                for name, value in values.items():
                    if name.endswith(("_sealed", "digest")) or name == "hash":
                        assert value in (None, "[secret]"), (entry.action, change["entity"], name)
    # ... while the log says that they were set.
    assert "[secret]" in text
    # A new password replaces the stored one (one statement, an upsert): the entry says it changed, not that a
    # first password was set.
    (password,) = [e for e in written if e.action == "POST /console/account/password"]
    assert [(c["entity"], c["op"], c["before"]["hash"], c["after"]["hash"]) for c in password.changes] == [
        ("user_passwords", "update", "[secret]", "[secret]")
    ]


async def test_a_refused_console_form_leaves_no_entry(app, api: Api, owner) -> None:  # noqa: ANN001
    org = await api.add_org("refusals", "1")
    member = await api.add_user(org, "Member", with_key=False)
    async with console_client(app) as http:
        owner_browser = await signed_in(app, http, int(owner.user_id))
        csrf = csrf_in((await owner_browser.page("/console/account")).text)
        walk = Walk(app, http, api, int(owner.user_id), csrf=csrf)
        before = await count(app)
        rename = f"/console/org/{org}/rename"
        forged = await http.post(rename, data={"csrf": "forged-" + csrf[7:], "name": "forged"})
        assert forged.status_code == 403
        no_token = await http.post(rename, data={"name": "forged"})
        assert no_token.status_code == 403
        other_site = await http.post(
            rename, data={"csrf": csrf, "name": "forged"}, headers={"origin": "https://attacker.example"}
        )
        assert other_site.status_code == 403
        # An input error shows the form again with the message; nothing of it is stored.
        bad_input = await http.post(
            f"/console/org/{org}/templates", data={"csrf": csrf, "name": "t", "definition": "flows: [unclosed"}
        )
        assert bad_input.status_code == 400
        assert (await walk.row(Organization, org)).name == "refusals"
        assert await walk.all(select(Template.id).where(Template.org_id == int(org))) == []
        assert await count(app) == before

    async with console_client(app) as http:
        member_browser = await signed_in(app, http, int(member.user_id))
        csrf = csrf_in((await member_browser.page("/console/account")).text)
        walk = Walk(app, http, api, int(member.user_id), csrf=csrf)
        before = await count(app)
        await walk.post(f"/console/org/{org}/orgs", {"name": "not-allowed"}, expect=403)
        await walk.post(f"/console/org/{org}/users", {"name": "X", "email": "x@example.com"}, expect=403)
        await walk.post(f"/console/org/{org}/templates", {"name": "t", "definition": DEFINITION % "v1"}, expect=403)
        await walk.post(f"/console/org/{org}/rename", {"name": "member-rename"}, expect=403)
        await walk.post("/console/org/1/rename", {"name": "outside"}, expect=404)
        assert await walk.all(select(Organization.id).where(Organization.parent_id == int(org))) == []
        assert await walk.one(select(User.id).where(User.email == "x@example.com")) is None
        assert await walk.all(select(Template.id).where(Template.org_id == int(org))) == []
        assert (await walk.row(Organization, org)).name == "refusals"
        assert (await walk.row(Organization, 1)).name != "outside"
        assert await count(app) == before
