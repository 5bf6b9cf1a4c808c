"""`ihub audit list|export|purge`, and changes made at the shell recorded with channel `cli` (in process:
the commands run in a thread against the test's database, beside the in-process hub)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from audit_kit import entries
from sqlalchemy import insert

from ihub.audit.models import AuditEntry
from ihub.audit.service import purge_audit_log, purge_entries
from ihub.db.base import utcnow

pytestmark = pytest.mark.anyio


async def test_a_change_at_the_shell_is_recorded_as_the_operator(app, owner, shell) -> None:  # noqa: ANN001
    before = len(await entries(app))
    invited = await shell("user", "invite", "--email", "owner@ihub.local", "--json")
    assert invited.exit_code == 0, invited.output
    written = (await entries(app))[before:]
    assert len(written) == 1
    (entry,) = written
    assert entry.channel == "cli" and entry.actor_user_id is None
    assert entry.action == "ihub user invite"
    assert "@" in entry.actor_name  # os-user@host
    assert entry.org_path == "/1/"  # the invited user's organization
    assert entry.target_type == "signin_links"
    token = json.loads(invited.stdout)["url"].rsplit("/", 1)[1]
    assert token not in json.dumps(entry.changes)

    # Reading changes nothing and leaves no entry.
    listed = await shell("audit", "list", "--json", "--channel", "cli")
    assert listed.exit_code == 0, listed.output
    assert [e["id"] for e in json.loads(listed.stdout)["entries"]] == [str(entry.id)]
    assert len(await entries(app)) == before + 1

    exported = await shell("audit", "export", "--action", "ihub user invite", "--since", "2000-01-01")
    assert exported.exit_code == 0, exported.output
    assert [json.loads(line)["action"] for line in exported.stdout.splitlines()] == ["ihub user invite"]

    bad = await shell("audit", "list", "--json", "--channel", "fax")
    assert bad.exit_code == 1 and "channel" in json.loads(bad.stdout)["error"]
    later = await shell("audit", "list", "--json", "--since", "2999-01-01T00:00:00+00:00")
    assert later.exit_code == 0 and json.loads(later.stdout)["entries"] == []


async def test_purge_removes_only_entries_past_the_retention(app, owner, shell) -> None:  # noqa: ANN001
    def old_entry(days: int) -> dict[str, Any]:
        return {
            "at": utcnow() - timedelta(days=days),
            "channel": "api",
            "actor_name": "x",
            "org_path": "/1/",
            "action": f"old {days}",
            "changes": [],
        }

    async with app.state.context.sessions() as session:
        await session.execute(insert(AuditEntry), [old_entry(400), old_entry(10)])
        await session.commit()
    purged = await shell("audit", "purge", "--older-than-days", "30", "--json")
    assert purged.exit_code == 0, purged.output
    assert json.loads(purged.stdout) == {"purged": 1, "olderThanDays": 30}
    # The purge itself stays on record: who removed how much history, however few days they asked for.
    kept, purge = await entries(app)
    assert kept.action == "old 10" and (purge.channel, purge.action) == ("cli", "ihub audit purge")
    assert purge.changes == [
        {
            "entity": "audit_entries",
            "id": None,
            "op": "purge",
            "before": {"entries": 1, "olderThanDays": 30},
            "after": None,
        }
    ]

    async with app.state.context.sessions() as session:
        assert await purge_entries(session, older_than_days=5) == 1
        await session.commit()
    assert [e.action for e in await entries(app)] == ["ihub audit purge"]  # the hourly pass records nothing

    # The hourly housekeeping pass uses IHUB_AUDIT_RETENTION_DAYS.
    async with app.state.context.sessions() as session:
        await session.execute(insert(AuditEntry), [old_entry(app.state.context.settings.audit_retention_days + 1)])
        await session.commit()
    assert await purge_audit_log(app.state.context) == 1
    assert [e.action for e in await entries(app)] == ["ihub audit purge"]


async def test_entries_cannot_be_updated(app, api) -> None:  # noqa: ANN001
    from sqlalchemy import update
    from sqlalchemy.exc import DatabaseError

    await api.add_org("o", "1")
    (entry,) = await entries(app)
    async with app.state.context.sessions() as session:
        with pytest.raises(DatabaseError, match="append-only"):
            await session.execute(update(AuditEntry).where(AuditEntry.id == entry.id).values(actor_name="someone"))
        await session.rollback()
    assert (await entries(app))[0].actor_name == entry.actor_name


async def test_trigger_commands_are_recorded_too(app, owner, client, auth, shell) -> None:  # noqa: ANN001
    from template_kit import definition

    created = await client.post("/api/v1/template/org/1", json={"name": "t", "definition": definition()}, headers=auth)
    template_id = created.json()["templates"][0]["id"]
    created = await client.post("/api/v1/project/org/1", json={"name": "p", "templateId": template_id}, headers=auth)
    flow_id = created.json()["projects"][0]["flows"][0]["id"]
    before = len(await entries(app))
    made = await shell("trigger", "create", "--flow", flow_id, "--json")
    assert made.exit_code == 0, made.output
    written = (await entries(app))[before:]
    assert [(e.channel, e.action, e.target_type) for e in written] == [
        ("cli", "ihub trigger create", "trigger_clients")
    ]
    private_key = json.loads(made.stdout)["triggers"][0]["privateKey"]
    assert private_key.splitlines()[1] not in json.dumps(written[0].changes)
