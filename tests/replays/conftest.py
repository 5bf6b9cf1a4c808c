from __future__ import annotations

from typing import Any

import pytest

from ihub.app import create_app
from ihub.config import Settings


@pytest.fixture
async def app(settings: Settings):  # noqa: ANN201
    """The hub without background work: no executor (the replays stay queued: a thousand of them executing would
    be slow and beside the point) and no replay worker (tests drive ReplayWorker themselves, on a fake clock)."""
    application = create_app(settings, run_worker=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def limits(app: Any):  # noqa: ANN201
    """Change the replay settings of the running app: `limits(replay_max_runs=5)`."""

    def change(**values: Any) -> None:
        context = app.state.context
        context.settings = context.settings.model_copy(update=values)

    return change
