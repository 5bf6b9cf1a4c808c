"""The permission matrix: every org/user/key endpoint × role × target inside/outside the caller's subtree.

Tree (built once per database backend, shared by every case):

    root (1) ─┬─ A ── A1        callers: one Owner, one Admin and one Member in A
              └─ B

Each case gets fresh targets so cases cannot disturb each other: an org under A1 (inside) or under B
(outside), holding an empty child org and one user of each role. Expected: inside → 200 when the role is
allowed, else 403; outside → 404 for everyone (existence is not revealed).

Every case also checks the effect, from a snapshot of the whole database before and after the request: a
refused request (403/404) and every read leave it identical; an allowed write changes the row's table.

EXTENSION POINT: to cover another domain (templates, projects ...), append `Row`s to `ROWS` and, if the
rows need new kinds of targets, a builder to `TARGET_BUILDERS` that creates them in the target org and
returns their ids by placeholder name.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text

from db_snapshot import changed_tables, snapshot
from ihub.app import create_app
from ihub.bootstrap import initialize
from ihub.config import Settings
from ihub.db.engine import sync_url
from ihub.db.registry import metadata

pytestmark = pytest.mark.anyio

OWNER, ADMIN, MEMBER = "Owner", "Admin", "Member"
ROLES = (OWNER, ADMIN, MEMBER)
EVERYONE = frozenset(ROLES)
MANAGERS = frozenset({OWNER, ADMIN})
OWNERS = frozenset({OWNER})
ORGS, USERS, KEYS = "organizations", "users", "api_keys"


@dataclass(frozen=True)
class Row:
    """One request. `path` and `body` may use placeholders: {org} (the target org), {leaf} (an empty
    org below it), {member}/{admin}/{owner} (users in it), {uid} (unique per case), and any a builder adds."""

    name: str
    method: str
    path: str
    allowed: frozenset[str]
    body: Any = None
    # The table an allowed request must change; None for reads (which must change nothing).
    changes: str | None = None
    # The exact 403 message, per refused role.
    refusals: dict[str, str] = field(default_factory=dict)
    # False for requests that name no target (such as listing the caller's own orgs): inside only.
    targeted: bool = True


def new_user(role: str) -> dict[str, str]:
    return {"name": f"New {role}", "email": f"new-{role.lower()}-{{uid}}@example.com", "role": role}


OWNER_ONLY = "only an Owner may {}"
MANAGER_ONLY = "only an Owner or Admin may {}"


def owners_only(action: str) -> dict[str, str]:
    return {ADMIN: OWNER_ONLY.format(action), MEMBER: OWNER_ONLY.format(action)}


def managers_only(action: str, owner_target: str = "", prefix: str = "") -> dict[str, str]:
    """Members are refused the action; Admins too when the target is (or becomes) an Owner."""
    refused = {MEMBER: prefix + MANAGER_ONLY.format(action)}
    if owner_target:
        refused[ADMIN] = prefix + OWNER_ONLY.format(owner_target)
    return refused


CREATE = "users[0].role: "
ROWS: list[Row] = [
    # organizations
    Row("list orgs", "GET", "/api/v1/org", EVERYONE, targeted=False),
    Row("get org", "GET", "/api/v1/org/{org}", EVERYONE),
    Row(
        "create org under target",
        "POST",
        "/api/v1/org",
        OWNERS,
        {"name": "sub-{uid}", "parentId": "{org}"},
        changes=ORGS,
        refusals=owners_only("create organizations"),
    ),
    Row(
        "rename org",
        "PUT",
        "/api/v1/org/{org}",
        OWNERS,
        {"name": "renamed-{uid}"},
        changes=ORGS,
        refusals=owners_only("change organizations"),
    ),
    Row(
        "move org",
        "PUT",
        "/api/v1/org/{leaf}",
        OWNERS,
        {"parentId": "{member_org}"},
        changes=ORGS,
        refusals=owners_only("change organizations"),
    ),
    Row(
        "delete empty org",
        "DELETE",
        "/api/v1/org/{leaf}",
        OWNERS,
        changes=ORGS,
        refusals=owners_only("delete organizations"),
    ),
    Row(
        "delete org with cascade",
        "DELETE",
        "/api/v1/org/{org}?cascade=true",
        OWNERS,
        changes=ORGS,
        refusals=owners_only("delete organizations"),
    ),
    # users
    Row("list users", "GET", "/api/v1/user/org/{org}", EVERYONE),
    Row(
        "create Member",
        "POST",
        "/api/v1/user/org/{org}",
        MANAGERS,
        [new_user(MEMBER)],
        USERS,
        managers_only("create", prefix=CREATE),
    ),
    Row(
        "create Admin",
        "POST",
        "/api/v1/user/org/{org}",
        MANAGERS,
        [new_user(ADMIN)],
        USERS,
        managers_only("create", prefix=CREATE),
    ),
    Row(
        "create Owner",
        "POST",
        "/api/v1/user/org/{org}",
        OWNERS,
        [new_user(OWNER)],
        USERS,
        managers_only("create", "create an Owner", prefix=CREATE),
    ),
    Row("get user", "GET", "/api/v1/user/{member}", EVERYONE),
    Row(
        "rename Member",
        "PUT",
        "/api/v1/user/{member}",
        MANAGERS,
        {"name": "renamed-{uid}"},
        USERS,
        managers_only("change"),
    ),
    Row(
        "rename Admin",
        "PUT",
        "/api/v1/user/{admin}",
        MANAGERS,
        {"name": "renamed-{uid}"},
        USERS,
        managers_only("change"),
    ),
    Row(
        "rename Owner",
        "PUT",
        "/api/v1/user/{owner}",
        OWNERS,
        {"name": "renamed-{uid}"},
        USERS,
        managers_only("change", "change an Owner"),
    ),
    Row(
        "make Member an Admin",
        "PUT",
        "/api/v1/user/{member}",
        MANAGERS,
        {"role": ADMIN},
        USERS,
        managers_only("change"),
    ),
    Row(
        "make Member an Owner",
        "PUT",
        "/api/v1/user/{member}",
        OWNERS,
        {"role": OWNER},
        USERS,
        managers_only("change", "make a user an Owner"),
    ),
    Row(
        "make Owner a Member",
        "PUT",
        "/api/v1/user/{owner}",
        OWNERS,
        {"role": MEMBER},
        USERS,
        managers_only("change", "change an Owner"),
    ),
    Row("delete Member", "DELETE", "/api/v1/user/{member}", MANAGERS, changes=USERS, refusals=managers_only("delete")),
    Row("delete Admin", "DELETE", "/api/v1/user/{admin}", MANAGERS, changes=USERS, refusals=managers_only("delete")),
    Row(
        "delete Owner",
        "DELETE",
        "/api/v1/user/{owner}",
        OWNERS,
        changes=USERS,
        refusals=managers_only("delete", "delete an Owner"),
    ),
    # keys
    Row(
        "key for Member",
        "POST",
        "/api/v1/user/{member}/key",
        OWNERS,
        changes=KEYS,
        refusals=owners_only("generate API keys"),
    ),
    Row(
        "key for Owner",
        "POST",
        "/api/v1/user/{owner}/key",
        OWNERS,
        changes=KEYS,
        refusals=owners_only("generate API keys"),
    ),
]


@dataclass
class Hub:
    client: httpx.AsyncClient
    root: dict[str, str]
    sessions: Any = None
    orgs: dict[str, str] = field(default_factory=dict)
    callers: dict[str, dict[str, str]] = field(default_factory=dict)

    async def call(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
        return await self.client.request(method, path, headers=headers, json=body)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.call(method, path, self.root, body)
        assert response.status_code == 200, f"set-up {method} {path}: {response.text}"
        return response.json()

    async def org(self, name: str, parent: str) -> str:
        return (await self.ok("POST", "/api/v1/org", {"name": name, "parentId": parent}))["organizations"][0]["id"]

    async def users(self, org: str, *roles: str) -> list[str]:
        entries = [{"name": r, "email": f"{r.lower()}-{uuid.uuid4().hex}@example.com", "role": r} for r in roles]
        return [u["id"] for u in (await self.ok("POST", f"/api/v1/user/org/{org}", entries))["users"]]

    async def token(self, user_id: str) -> dict[str, str]:
        secret = (await self.ok("POST", f"/api/v1/user/{user_id}/key"))["keys"][0]["secret"]
        nonce = uuid.uuid4().hex
        digest = hashlib.sha256((secret + nonce).encode()).hexdigest()
        response = await self.call("POST", "/api/v1/token", {}, {"userId": user_id, "nonce": nonce, "hash": digest})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['tokens'][0]['token']}"}


async def base_targets(hub: Hub, org: str, uid: str) -> dict[str, str]:
    member, admin, owner = await hub.users(org, MEMBER, ADMIN, OWNER)
    leaf = await hub.org(f"leaf-{uid}", org)
    # Somewhere to move {leaf} to: an org on the same side of the caller's subtree.
    member_org = await hub.org(f"dest-{uid}", org)
    return {"org": org, "leaf": leaf, "member_org": member_org, "member": member, "admin": admin, "owner": owner}


TARGET_BUILDERS: list[Callable[[Hub, str, str], Awaitable[dict[str, str]]]] = [base_targets]


def fill(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**targets)
    if isinstance(value, list):
        return [fill(item, targets) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, targets) for key, item in value.items()}
    return value


BACKENDS = [b for b in os.environ.get("IHUB_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]


@pytest.fixture(scope="module", params=BACKENDS)
async def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hub]:
    """One hub per backend for the whole matrix: set-up once, fresh targets per case."""
    tmp: Path = tmp_path_factory.mktemp("matrix")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'ihub.db'}"
        engine = create_sync_engine(url)
        metadata.create_all(engine)
    else:
        url = request.getfixturevalue("postgres_database")
        engine = create_sync_engine(sync_url(url))
        with engine.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    settings = Settings(
        data_dir=tmp / "data", database_url=url, public_url="http://testserver", secret_key="m" * 48, _env_file=None
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        context = app.state.context
        async with context.sessions() as session:
            first = await initialize(session, context.box)
            await session.commit()
        assert first is not None
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40001))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            nonce = uuid.uuid4().hex
            digest = hashlib.sha256((first.secret + nonce).encode()).hexdigest()
            response = await client.post(
                "/api/v1/token", json={"userId": str(first.user_id), "nonce": nonce, "hash": digest}
            )
            hub = Hub(client, {"Authorization": response.json()["tokens"][0]["token"]}, context.sessions)
            a = await hub.org("A", "1")
            hub.orgs = {"A": a, "A1": await hub.org("A1", a), "B": await hub.org("B", "1")}
            callers = await hub.users(a, *ROLES)
            hub.callers = {role: await hub.token(user_id) for role, user_id in zip(ROLES, callers, strict=True)}
            yield hub


def hidden_object(row: Row, targets: dict[str, str]) -> str:
    """What a 404 names: the first object of the path outside the caller's subtree."""
    if row.path == "/api/v1/org":
        return f"organization {fill(row.body['parentId'], targets)}"
    kind, _, placeholder = row.path.removeprefix("/api/v1/").partition("/")
    if placeholder.startswith("org/"):
        kind, placeholder = "org", placeholder.removeprefix("org/")
    object_id = fill(placeholder.split("/")[0].split("?")[0], targets)
    return f"{'organization' if kind == 'org' else kind} {object_id}"


CASES = [
    pytest.param(row, role, side, id=f"{row.name}-{role}-{side}")
    for row, role, side in itertools.product(ROWS, ROLES, ("inside", "outside"))
    if row.targeted or side == "inside"
]


@pytest.mark.parametrize(("row", "role", "side"), CASES)
async def test_permission_matrix(hub: Hub, row: Row, role: str, side: str):
    uid = uuid.uuid4().hex[:12]
    org = await hub.org(f"target-{uid}", hub.orgs["A1" if side == "inside" else "B"])
    targets = {"uid": uid}
    for build in TARGET_BUILDERS:
        targets.update(await build(hub, org, uid))
    # Outside the subtree everything is 404; inside, the role decides.
    expected = (200 if role in row.allowed else 403) if side == "inside" else 404
    before = await snapshot(hub.sessions)
    response = await hub.call(row.method, fill(row.path, targets), hub.callers[role], fill(row.body, targets))
    changed = changed_tables(before, await snapshot(hub.sessions))
    assert response.status_code == expected, f"{row.method} {row.path} as {role} ({side}): {response.text}"
    if expected != 200:
        metadata = response.json()["metadata"]
        assert metadata["status"] == expected and metadata["message"]
        if expected == 403:
            assert metadata["message"] == row.refusals[role]
        else:
            assert metadata["message"] == f"{hidden_object(row, targets)} not found"
        assert not changed, f"refused with {expected}, yet {sorted(changed)} changed"
    elif row.changes is None:
        assert not changed, f"a read changed {sorted(changed)}"
    else:
        assert row.changes in changed, f"answered 200 but {row.changes} is unchanged"
