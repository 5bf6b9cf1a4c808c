"""`ihub failures list|runs` read the failure inbox from the server's shell (in-process, on the database the
API wrote): every organization without --org, a subtree's share with it."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from failure_seed import seed
from ihub.cli import app as cli_app
from ihub.config import get_settings
from ihub.runs import cli as runs_cli

pytestmark = pytest.mark.anyio
runner = CliRunner()


async def ihub(*args: str) -> Any:
    # In a thread: the command runs its own event loop (asyncio.run), which cannot nest in the test's.
    return await anyio.to_thread.run_sync(lambda: runner.invoke(cli_app, ["failures", *args]))


@pytest.fixture
def shell_env(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("IHUB_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("IHUB_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("IHUB_DATA_DIR", str(settings.data_dir))
    # A wide terminal, so table cells are not wrapped: the module's console was made at import, before any
    # environment a test sets, so its width is set on it.
    monkeypatch.setattr(runs_cli.console, "width", 200)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def test_list_and_runs(app, client, auth, shell_env) -> None:  # noqa: ANN001
    seeded = await seed(app, client, auth)

    everything = await ihub("list", "--json")
    assert everything.exit_code == 0, everything.output
    groups = json.loads(everything.stdout)["failures"]
    assert [(g["key"], g["count"]) for g in groups] == [(seeded.b_only, 1), (seeded.shared, 10)]

    a_only = json.loads((await ihub("list", "--org", seeded.a, "--json")).stdout)["failures"]
    assert [(g["key"], g["count"], g["organizationCount"]) for g in a_only] == [(seeded.shared, 5, 2)]

    table = await ihub("list", "--org", seeded.b)
    assert table.exit_code == 0 and seeded.shared in table.stdout and "sync" in table.stdout

    runs = await ihub("runs", seeded.shared, "--org", seeded.b, "--json")
    assert runs.exit_code == 0, runs.output
    assert [int(r["id"]) for r in json.loads(runs.stdout)["runs"]] == sorted(seeded.runs[seeded.shared][seeded.b])[::-1]
    assert seeded.shared[:8] in (await ihub("runs", seeded.shared)).stdout

    # a's subtree never had b's group; a malformed key and an unknown organization are errors, not tracebacks.
    missing = await ihub("runs", seeded.b_only, "--org", seeded.a, "--json")
    assert missing.exit_code == 1 and "not found" in json.loads(missing.stdout)["error"]
    assert (await ihub("runs", "nope", "--json")).exit_code == 1
    assert (await ihub("list", "--org", "999999", "--json")).exit_code == 1
