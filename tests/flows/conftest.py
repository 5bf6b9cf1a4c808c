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
def executor_kind(request: pytest.FixtureRequest, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "procrastinate":
        if db_url.startswith("sqlite"):
            pytest.skip("procrastinate needs PostgreSQL")
        # Scheduled (retry) jobs are found by polling; keep retry timing close to the configured delays.
        monkeypatch.setenv("IHUB_POLL_INTERVAL", "0.05")
    return request.param


@pytest.fixture
def settings(settings: Settings, executor_kind: str) -> Settings:
    return settings.model_copy(update={"executor": executor_kind})


@pytest.fixture
async def kit(client, auth, app) -> Kit:  # noqa: ANN001
    return Kit(client, auth, app)
