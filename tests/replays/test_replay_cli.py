"""`ihub replay start|show|list|pause|resume|cancel` on the database the API wrote (in-process: a thread of its own,
so the command's own event loop does not block the test's)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from ihub.cli import app as cli
from ihub.config import get_settings
from replay_kit import failed_runs, key, project, replays_of, worker
from shell_env import use_hub_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def ihub(settings, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    use_hub_settings(settings, monkeypatch)

    async def run(*args: str) -> tuple[int, Any]:
        result = await anyio.to_thread.run_sync(lambda: CliRunner().invoke(cli, ["replay", *args, "--json"]))
        return result.exit_code, json.loads(result.stdout)

    yield run
    get_settings.cache_clear()


async def test_dry_run_start_show_list_and_cancel(client, auth, app, ihub) -> None:  # noqa: ANN001
    prj = await project(client, auth)
    originals = await failed_runs(app, prj, 4, failure_key=key("c"))

    code, preview = await ihub("start", "--org", "1", "--failure-key", key("c"), "--dry-run")
    assert code == 0 and (preview["selected"], preview["toReplay"]) == (4, 4)
    assert [s["runId"] for s in preview["sample"]] == [str(i) for i in originals]

    code, started = await ihub("start", "--org", "1", "--failure-key", key("c"), "--rate", "2", "--version", "current")
    assert code == 0 and (started["status"], started["selected"], started["createdBy"]) == ("pending", 4, None)
    await worker(app).run_until_idle()
    assert await replays_of(app, originals) == dict.fromkeys(originals, 1)

    code, shown = await ihub("show", started["id"])
    assert code == 0 and (shown["status"], shown["replayed"], len(shown["items"])) == ("done", 4, 4)
    code, listed = await ihub("list", "--org", "1")
    assert code == 0 and [b["id"] for b in listed["replays"]] == [started["id"]]
    assert await ihub("cancel", started["id"]) == (1, {"error": f"replay {started['id']} is done"})

    assert await ihub("start", "--org", "999", "--flow", "sync") == (1, {"error": "organization 999 not found"})
    code, refused = await ihub("start", "--org", "1")  # nothing chosen: not every failed run of the hub
    assert code == 1 and "choose what to replay" in refused["error"]
    code, refused = await ihub("start", "--org", "1", "--flow", "sync", "--rate", "100000")
    assert code == 1 and "rate" in refused["error"]
