"""Audit tests run the app without an executor and without event delivery: runs stay queued, so cancel and
replay have a run to act on, an event delivery stays pending for its re-send, and no worker writes beside the
requests under test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ihub.app import create_app
from ihub.config import Settings

# The console tests' in-process browser (tests/console/console_kit.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "console"))


@pytest.fixture
async def app(settings: Settings):  # noqa: ANN201
    application = create_app(settings.model_copy(update={"event_delivery": False}), run_worker=False)
    async with application.router.lifespan_context(application):
        yield application
