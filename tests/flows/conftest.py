"""Engine tests run on both executors: local (SQLite and PostgreSQL) and procrastinate (PostgreSQL)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ihub.config import Settings

# Helpers live next to this file; import them whatever pytest's import mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flowkit import Kit  # noqa: E402


@pytest.fixture(params=["local", "procrastinate"])
def executor_kind(request: pytest.FixtureRequest, db_url: str) -> str:
    if request.param == "procrastinate" and db_url.startswith("sqlite"):
        pytest.skip("procrastinate needs PostgreSQL")
    return request.param


@pytest.fixture
def settings(settings: Settings, executor_kind: str) -> Settings:
    update: dict[str, object] = {"executor": executor_kind}
    if executor_kind == "procrastinate":
        # Scheduled (retry) jobs are found by polling; keep retry timing close to the configured delays.
        update["poll_interval"] = 0.05
    return settings.model_copy(update=update)


@pytest.fixture
async def kit(client, auth, app) -> Kit:  # noqa: ANN001
    return Kit(client, auth, app)
