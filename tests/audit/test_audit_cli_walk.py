"""Every `ihub` command, found by walking the registered typer/click commands: each one that changes data does
it (the rows say so) and leaves exactly one audit entry with channel `cli`, the command as action and the
organization of what it changed, and no secret (the API keys, trigger private keys and sign-in links it printed,
a password hash it removed); each read-only one, and each refused change, writes no row and no entry.

A new command fails `test_every_command_is_covered` until it gets an example run in CHANGES or READ_ONLY
(or a reason in NOT_RUN), so no command can be added unaudited. The commands run in process, as
test_audit_cli.py runs them (the `shell` fixture of conftest.py)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
from audit_kit import entries
from click.testing import Result
from sqlalchemy import insert, select

from db_snapshot import snapshot
from ihub.audit.models import AuditEntry
from ihub.cli import app as cli_app
from ihub.db.base import utcnow
from ihub.db.registry import metadata
from ihub.runs import failures

pytestmark = pytest.mark.anyio

# Commands not run here, with the reason. Each is about the schema or processes, not a person's change.
NOT_RUN = {
    "init": "creates the first Owner before there is anything to audit (docs/operations.md); tests/test_cli.py",
    "migrate": "changes the schema, not data; tests/test_migrations.py",
    "serve": "a server (its first start is `init`'s work); tests/test_cli.py",
    "worker": "executes queued runs: run history, not a change a person makes (docs/operations.md)",
}


def definition(flow_name: str = "v1") -> dict[str, Any]:
    """One jira slot and one jwt-triggered flow (trigger commands need one); `flow_name` tells versions apart."""
    return {
        "connections": [{"id": "jira", "type": "jira", "name": "Jira"}],
        "flows": [
            {
                "key": "f",
                "name": flow_name,
                "trigger": {"type": "jwt"},
                "steps": [{"id": "call", "type": "http", "connection": "jira", "path": "/x"}],
            }
        ],
    }


@dataclass
class World:
    """What set-up and earlier commands made, and every secret a command printed."""

    app: Any
    client: httpx.AsyncClient
    auth: dict[str, str]
    files: Path
    ids: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)

    async def rows(self, table: str, **equal: Any) -> list[dict[str, Any]]:
        """The rows of `table` whose columns equal `equal`, in the order they were made."""
        columns = metadata.tables[table]
        (key,) = columns.primary_key.columns
        query = select(columns).where(*(columns.c[name] == value for name, value in equal.items())).order_by(key)
        async with self.app.state.context.sessions() as session:
            return [dict(row) for row in (await session.execute(query)).mappings()]

    async def row(self, table: str, **equal: Any) -> dict[str, Any]:
        (found,) = await self.rows(table, **equal)
        return found

    async def api(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        response = await self.client.request(method, url, json=body, headers=self.auth)
        assert response.is_success, f"{method} {url}: {response.status_code} {response.text}"
        return dict(response.json()) if response.content else {}

    def template_file(self, name: str, flow_name: str) -> str:
        path = self.files / f"{name}-{flow_name}.yaml"
        path.write_text(json.dumps({"name": name, "description": "d", "definition": definition(flow_name)}))
        return str(path)


Args = Callable[[World], list[str]]
Check = Callable[[World, Result], Awaitable[None]]


@dataclass(frozen=True)
class Change:
    """A run of `command` that changes data: `check` proves it did (and keeps what later runs need)."""

    command: str
    args: Args
    check: Check
    # Whose entry it is: "child" (the organization the set-up made) or "root".
    org: str = "child"


@dataclass(frozen=True)
class Read:
    """A run of a read-only `command`, and why it changes nothing."""

    command: str
    args: Args
    reason: str


def stdout_json(result: Result) -> dict[str, Any]:
    return dict(json.loads(result.stdout))


def private_key(result: Result) -> str:
    return str(stdout_json(result)["triggers"][0]["privateKey"])


# -- checks: the change happened ------------------------------------------------------------------------------


async def template_created(w: World, result: Result) -> None:
    out = stdout_json(result)
    assert out["created"] is True
    row = await w.row("templates", id=int(out["id"]))
    assert (row["org_id"], row["name"], row["version"]) == (int(w.ids["child"]), "imported", 1)


async def template_updated(w: World, result: Result) -> None:
    assert stdout_json(result)["created"] is False
    row = await w.row("templates", id=int(w.ids["template"]))
    assert row["version"] == 2 and row["definition"]["flows"][0]["name"] == "v2"


async def project_upgraded(w: World, result: Result) -> None:
    assert (await w.row("projects", id=int(w.ids["project"])))["template_version"] == 2


async def run_replayed(w: World, result: Result) -> None:
    replay = await w.row("runs", replay_of=int(w.ids["run"]))
    assert replay["id"] == int(stdout_json(result)["runId"]) and replay["status"] == "queued"


async def replay_started(w: World, result: Result) -> None:
    w.ids["replay"] = stdout_json(result)["id"]
    batch = await w.row("replay_batches", id=int(w.ids["replay"]))
    assert (batch["org_id"], batch["status"], batch["selected"]) == (int(w.ids["child"]), "pending", 1)


def replay_status(status: str) -> Check:
    async def check(w: World, result: Result) -> None:
        assert (await w.row("replay_batches", id=int(w.ids["replay"])))["status"] == status

    return check


async def trigger_created(w: World, result: Result) -> None:
    out = stdout_json(result)["triggers"][0]
    w.ids["iss"], w.ids["kid"] = out["iss"], out["kid"]
    w.secrets.append(private_key(result))
    client = await w.row("trigger_clients", client_id=w.ids["iss"])
    assert client["flow_id"] == int(w.ids["flow"]) and client["enabled"]
    w.ids["client_pk"] = str(client["id"])
    assert [k["kid"] for k in await w.rows("trigger_keys", client_pk=client["id"])] == [w.ids["kid"]]


async def keys(w: World) -> list[dict[str, Any]]:
    return await w.rows("trigger_keys", client_pk=int(w.ids["client_pk"]))


async def key_rotated(w: World, result: Result) -> None:
    w.secrets.append(private_key(result))
    w.ids["kid"] = stdout_json(result)["triggers"][0]["kid"]
    found = await keys(w)
    assert len(found) == 2 and found[-1]["kid"] == w.ids["kid"]
    assert all(k["revoked_at"] is None for k in found)


async def key_rotated_revoking_old(w: World, result: Result) -> None:
    w.secrets.append(private_key(result))
    w.ids["kid"] = stdout_json(result)["triggers"][0]["kid"]
    found = await keys(w)
    assert len(found) == 3 and found[-1]["kid"] == w.ids["kid"]
    assert [k["revoked_at"] is not None for k in found] == [True, True, False]


async def key_expiring(w: World, result: Result) -> None:
    assert (await keys(w))[-1]["expires_at"] is not None


async def key_expiry_cleared(w: World, result: Result) -> None:
    assert (await keys(w))[-1]["expires_at"] is None


async def key_revoked(w: World, result: Result) -> None:
    assert all(k["revoked_at"] is not None for k in await keys(w))


def client_enabled(enabled: bool) -> Check:
    async def check(w: World, result: Result) -> None:
        assert (await w.row("trigger_clients", client_id=w.ids["iss"]))["enabled"] is enabled

    return check


async def key_generated(w: World, result: Result) -> None:
    secret = stdout_json(result)["secret"]
    w.secrets.append(secret)
    # The new secret is the user's: it signs in.
    nonce = str(uuid.uuid1())
    digest = hashlib.sha256((secret + nonce).encode()).hexdigest()
    response = await w.client.post("/api/v1/token", json={"userId": w.ids["user"], "nonce": nonce, "hash": digest})
    assert response.status_code == 200, response.text


def link_issued(purpose: str) -> Check:
    async def check(w: World, result: Result) -> None:
        token = stdout_json(result)["url"].rsplit("/", 1)[1]
        w.secrets.append(token)
        (link,) = await w.rows("signin_links", user_id=int(w.ids["user"]))
        assert link["purpose"] == purpose and link["digest"] == hashlib.sha256(token.encode()).hexdigest()
        if purpose == "reset":
            assert await w.rows("user_passwords", user_id=int(w.ids["user"])) == []

    return check


async def audit_purged(w: World, result: Result) -> None:
    assert stdout_json(result)["purged"] == 1
    assert await w.rows("audit_entries", action="old") == []


# In the order they run: later runs use what earlier ones made.
CHANGES = [
    Change(
        "template import",
        lambda w: ["template", "import", w.template_file("imported", "v1"), "--org", w.ids["child"], "--json"],
        template_created,
    ),
    # The same name again: a new version of the set-up's template.
    Change(
        "template import",
        lambda w: ["template", "import", w.template_file("t", "v2"), "--org", w.ids["child"], "--json"],
        template_updated,
    ),
    Change("project upgrade", lambda w: ["project", "upgrade", w.ids["project"], "--json"], project_upgraded),
    Change("runs replay", lambda w: ["runs", "replay", w.ids["run"], "--json"], run_replayed),
    Change(
        "replay start",
        lambda w: (
            ["replay", "start", "--org", w.ids["child"], "--flow", w.ids["flow"], "--status", "cancelled"]
            + ["--rate", "1", "--json"]
        ),
        replay_started,
    ),
    Change("replay pause", lambda w: ["replay", "pause", w.ids["replay"], "--json"], replay_status("paused")),
    Change("replay resume", lambda w: ["replay", "resume", w.ids["replay"], "--json"], replay_status("pending")),
    Change("replay cancel", lambda w: ["replay", "cancel", w.ids["replay"], "--json"], replay_status("cancelled")),
    Change("trigger create", lambda w: ["trigger", "create", "--flow", w.ids["flow"], "--json"], trigger_created),
    Change("trigger rotate", lambda w: ["trigger", "rotate", "--client", w.ids["iss"], "--json"], key_rotated),
    Change(
        "trigger rotate",
        lambda w: ["trigger", "rotate", "--client", w.ids["iss"], "--revoke-old", "--json"],
        key_rotated_revoking_old,
    ),
    Change(
        "trigger expire",
        lambda w: ["trigger", "expire", "--client", w.ids["iss"], "--kid", w.ids["kid"], "--in-days", "30", "--json"],
        key_expiring,
    ),
    Change(
        "trigger expire",
        lambda w: ["trigger", "expire", "--client", w.ids["iss"], "--kid", w.ids["kid"], "--clear", "--json"],
        key_expiry_cleared,
    ),
    Change(
        "trigger revoke",
        lambda w: ["trigger", "revoke", "--client", w.ids["iss"], "--kid", w.ids["kid"], "--json"],
        key_revoked,
    ),
    Change(
        "trigger disable", lambda w: ["trigger", "disable", "--client", w.ids["iss"], "--json"], client_enabled(False)
    ),
    Change("trigger enable", lambda w: ["trigger", "enable", "--client", w.ids["iss"], "--json"], client_enabled(True)),
    # Without --kid: the whole client.
    Change(
        "trigger revoke", lambda w: ["trigger", "revoke", "--client", w.ids["iss"], "--json"], client_enabled(False)
    ),
    Change("key generate", lambda w: ["key", "generate", "--user", w.ids["user"], "--json"], key_generated),
    Change("user invite", lambda w: ["user", "invite", "--email", w.ids["email"], "--json"], link_issued("invite")),
    Change(
        "user reset-password",
        lambda w: ["user", "reset-password", "--email", w.ids["email"], "--json"],
        link_issued("reset"),
    ),
    # Removing history names no organization: the root's Owners read it.
    Change("audit purge", lambda _w: ["audit", "purge", "--older-than-days", "30", "--json"], audit_purged, "root"),
]

READ_ONLY = [
    Read("user list", lambda _w: ["user", "list", "--json"], "lists users"),
    Read("template versions", lambda w: ["template", "versions", w.ids["template"], "--json"], "lists versions"),
    Read("template version", lambda w: ["template", "version", w.ids["template"], "1", "--json"], "shows a version"),
    Read("project show", lambda w: ["project", "show", w.ids["project"], "--json"], "shows connections"),
    Read("runs list", lambda w: ["runs", "list", "--project", w.ids["project"], "--json"], "lists runs"),
    Read("runs show", lambda w: ["runs", "show", w.ids["run"], "--json"], "shows a run"),
    Read("failures list", lambda _w: ["failures", "list", "--json"], "lists failure groups"),
    Read("failures runs", lambda w: ["failures", "runs", w.ids["failure"], "--json"], "lists a group's runs"),
    Read(
        "replay start",
        lambda w: [
            "replay",
            "start",
            "--org",
            w.ids["child"],
            "--failure-key",
            w.ids["failure"],
            "--dry-run",
            "--json",
        ],
        "a dry run only counts",
    ),
    Read("replay show", lambda w: ["replay", "show", w.ids["replay"], "--json"], "shows a bulk replay"),
    Read("replay list", lambda w: ["replay", "list", "--org", w.ids["child"], "--json"], "lists bulk replays"),
    Read("trigger show", lambda w: ["trigger", "show", "--flow", w.ids["flow"], "--json"], "shows triggers"),
    Read("audit list", lambda _w: ["audit", "list", "--json"], "reads the log"),
    Read("audit export", lambda _w: ["audit", "export"], "reads the log"),
    Read("audit purge", lambda _w: ["audit", "purge", "--json"], "nothing is past the retention: nothing to remove"),
]

# Changes that fail: no row and no entry either.
REFUSED = [
    ["project", "upgrade", "999999", "--json"],
    ["trigger", "rotate", "--client", "no-such-client", "--revoke-old", "--json"],
    ["user", "reset-password", "--email", "nobody@example.com", "--json"],
]


def registered_commands() -> set[str]:
    """Every leaf command of `ihub`, as its words after `ihub` ("trigger rotate")."""

    def walk(command: Any, path: list[str]) -> set[str]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            return {" ".join(path)}
        return {leaf for name, sub in subcommands.items() for leaf in walk(sub, [*path, name])}

    return walk(typer.main.get_command(cli_app), [])


def test_every_command_is_covered() -> None:
    found = registered_commands()
    covered = {c.command for c in CHANGES} | {r.command for r in READ_ONLY} | set(NOT_RUN)
    missing = found - covered
    assert not missing, f"add an example run to CHANGES or READ_ONLY (or a reason to NOT_RUN) for {sorted(missing)}"
    assert not covered - found, f"commands ihub no longer has: {sorted(covered - found)}"
    assert not {r.command for r in READ_ONLY} & set(NOT_RUN)


async def set_up(w: World) -> None:
    """Through the API: an organization below the root with a user, a template and its project, a queued run
    and a cancelled one; straight into the database: a failure group, an old audit entry, a password."""
    w.ids["child"] = (await w.api("POST", "/api/v1/org", {"name": "child", "parentId": "1"}))["organizations"][0]["id"]
    w.ids["email"] = f"member-{uuid.uuid4().hex[:6]}@example.com"
    body = [{"name": "Member", "email": w.ids["email"], "role": "Member"}]
    w.ids["user"] = (await w.api("POST", f"/api/v1/user/org/{w.ids['child']}", body))["users"][0]["id"]
    body = {"name": "t", "definition": definition("v1")}
    w.ids["template"] = (await w.api("POST", f"/api/v1/template/org/{w.ids['child']}", body))["templates"][0]["id"]
    body = {"name": "p", "templateId": w.ids["template"]}
    project = (await w.api("POST", f"/api/v1/project/org/{w.ids['child']}", body))["projects"][0]
    w.ids["project"], w.ids["flow"] = project["id"], project["flows"][0]["id"]
    w.ids["run"] = (await w.api("POST", f"/api/v1/flow/{w.ids['flow']}/run", {"n": 1}))["runId"]
    cancelled = (await w.api("POST", f"/api/v1/flow/{w.ids['flow']}/run", {"n": 2}))["runId"]
    await w.api("POST", f"/api/v1/run/{cancelled}/cancel")

    failure = failures.describe(
        org_id=int(w.ids["child"]), template_id=int(w.ids["template"]), flow_key="f", path="call", error="HTTP 422"
    )
    w.ids["failure"] = failure.key
    runs = metadata.tables["runs"]
    async with w.app.state.context.sessions() as session:
        await session.execute(
            insert(runs).values(
                uid=uuid.uuid4().hex,
                project_id=int(w.ids["project"]),
                flow_id=int(w.ids["flow"]),
                flow_version=1,
                status="failed",
                trigger_type="manual",
                trigger={"body": {}},
                error="HTTP 422",
                failed_step=failure.step,
                failure_key=failure.key,
                created_at=utcnow(),
            )
        )
        await failures.count(session, failure, utcnow())
        await session.execute(
            insert(AuditEntry).values(
                at=utcnow() - timedelta(days=400),
                channel="api",
                actor_name="x",
                org_path="/1/",
                action="old",
                changes=[],
            )
        )
        # A password for `user reset-password` to remove: its hash must not reach the entry either.
        password_hash = "$argon2id$v=19$m=65536,t=3,p=4$" + uuid.uuid4().hex
        w.secrets.append(password_hash)
        await session.execute(
            insert(metadata.tables["user_passwords"]).values(
                user_id=int(w.ids["user"]), hash=password_hash, updated_at=utcnow()
            )
        )
        await session.commit()


async def test_each_command_changes_what_it_says_and_leaves_exactly_one_entry(  # noqa: ANN001
    app, client, auth, shell, tmp_path
) -> None:
    w = World(app, client, auth, tmp_path)
    await set_up(w)
    paths = {"root": "/1/", "child": f"/1/{w.ids['child']}/"}

    for change in CHANGES:
        args = change.args(w)
        last = max(e.id for e in await entries(app))
        result = await shell(*args)
        assert result.exit_code == 0, f"ihub {' '.join(args)}: {result.output}"
        await change.check(w, result)
        # By id, not by count: `audit purge` removes entries.
        written = [e for e in await entries(app) if e.id > last]
        assert len(written) == 1, f"ihub {' '.join(args)} left {len(written)} entries"
        (entry,) = written
        assert (entry.channel, entry.action, entry.actor_user_id) == ("cli", f"ihub {change.command}", None)
        assert "@" in entry.actor_name  # os-user@host
        assert entry.org_path == paths[change.org], f"ihub {' '.join(args)}: entry of {entry.org_path}"
        assert entry.org_id == int(entry.org_path.strip("/").split("/")[-1])

    for read in READ_ONLY:
        args = read.args(w)
        before_rows = await snapshot(app.state.context.sessions)
        result = await shell(*args)
        assert result.exit_code == 0, f"ihub {' '.join(args)}: {result.output}"
        assert result.stdout.strip(), f"ihub {' '.join(args)} printed nothing"
        assert await snapshot(app.state.context.sessions) == before_rows, f"ihub {' '.join(args)} changed rows"

    for args in REFUSED:
        before_rows = await snapshot(app.state.context.sessions)
        result = await shell(*args)
        assert result.exit_code == 1, f"ihub {' '.join(args)}: {result.output}"
        assert await snapshot(app.state.context.sessions) == before_rows, f"ihub {' '.join(args)} changed rows"

    # No secret is anywhere in the log, nor JSON-escaped (a PEM's newlines), nor one line of a PEM: the API key
    # secret, the trigger private keys and the sign-in links the commands printed, the password hash removed.
    assert len(w.secrets) == 7
    log = json.dumps([(e.changes, e.actor_name, e.action, e.target_id) for e in await entries(app)])
    for secret in w.secrets:
        for part in [secret, json.dumps(secret)[1:-1], *[line for line in secret.splitlines() if len(line) > 40]]:
            assert part not in log
