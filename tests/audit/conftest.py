"""Audit tests run the app without an executor: runs stay queued, so cancel and replay have a run to act on
and no worker writes beside the requests under test."""

from __future__ import annotations

import pytest

from ihub.app import create_app
from ihub.config import Settings


@pytest.fixture
async def app(settings: Settings):  # noqa: ANN201
    application = create_app(settings, run_worker=False)
    async with application.router.lifespan_context(application):
        yield application
