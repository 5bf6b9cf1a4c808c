"""Audit tests run the app without an executor and without event delivery: runs stay queued, so cancel and
replay have a run to act on, an event delivery stays pending for its re-send, and no worker writes beside the
requests under test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import Result
from typer.testing import CliRunner

from ihub.app import create_app
from ihub.cli import app as cli_app
from ihub.config import Settings, get_settings
from shell_env import use_hub_settings

# The console tests' in-process browser (tests/console/console_kit.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "console"))


@pytest.fixture
async def app(settings: Settings):  # noqa: ANN201
    application = create_app(settings.model_copy(update={"event_delivery": False}), run_worker=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def shell(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`await shell("user", "invite", ...)`: an `ihub` command run in process against the test's database, as
    an operator at the server's shell runs it (the hub's settings from IHUB_* variables)."""
    use_hub_settings(settings, monkeypatch)
    runner = CliRunner()

    async def ihub(*args: str) -> Result:
        # In a thread: the command runs its own event loop, and the hub's must stay free meanwhile.
        return await anyio.to_thread.run_sync(lambda: runner.invoke(cli_app, list(args)))

    yield ihub
    get_settings.cache_clear()
