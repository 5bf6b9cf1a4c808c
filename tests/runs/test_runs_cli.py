"""`ihub runs list|show|replay` against the same database the API wrote (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anyio
import pytest
from flowkit import jira_definition

pytestmark = pytest.mark.anyio

FLOW = {"key": "echo", "trigger": "manual", "steps": [{"id": "out", "type": "respond", "body": "{{ trigger.body }}"}]}


async def ihub(settings, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    env = {
        **os.environ,
        "IHUB_DATABASE_URL": settings.database_url,
        "IHUB_SECRET_KEY": settings.secret_key,
        "IHUB_DATA_DIR": str(settings.data_dir),
        "IHUB_EXECUTOR": "local",
    }
    # In a thread: blocking the event loop would freeze the in-process hub, possibly while it holds
    # SQLite's write lock, which the CLI process then waits for in vain.
    return await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "ihub", "runs", *args], env=env, capture_output=True, text=True, timeout=60
        )
    )


async def test_list_show_replay(kit, settings) -> None:  # noqa: ANN001
    project = await kit.project(jira_definition([FLOW], slot_type="http"))
    run_id = await kit.trigger(kit.flow_id(project, "echo"), {"hello": "cli"})
    await kit.wait(run_id)

    listed = await ihub(settings, "list", "--project", project["id"], "--json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert [r["id"] for r in page["runs"]] == [run_id]

    table = await ihub(settings, "list", "--project", project["id"])
    assert table.returncode == 0 and "succeeded" in table.stdout and "echo" in table.stdout

    shown = await ihub(settings, "show", run_id, "--json")
    assert json.loads(shown.stdout)["result"]["body"] == {"hello": "cli"}
    assert "out" in (await ihub(settings, "show", run_id)).stdout

    replayed = await ihub(settings, "replay", run_id, "--json")
    assert replayed.returncode == 0, replayed.stderr
    new_id = json.loads(replayed.stdout)["runId"]
    run = await kit.wait(new_id)  # the app's local executor finds the queued run by polling
    assert run["replayOf"] == run_id and run["result"]["body"] == {"hello": "cli"}

    missing = await ihub(settings, "show", "999999", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout) == {"error": "run 999999 not found"}
    assert (await ihub(settings, "replay", "abc")).returncode == 1
