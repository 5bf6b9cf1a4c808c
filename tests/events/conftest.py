"""Event webhook tests: fast retries, a receiver on 127.0.0.1 (pytest-httpserver) and the flows' Kit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from ihub.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "flows"))

from flowkit import Kit  # noqa: E402


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Retries after a few tens of milliseconds, not seconds: the retry tests wait for the second attempt.
    return settings.model_copy(update={"event_retry_base_seconds": 0.05, "event_poll_interval": 0.1})


@pytest.fixture
async def kit(client: Any, auth: Any, app: Any) -> Kit:
    return Kit(client, auth, app)
