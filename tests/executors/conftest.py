from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "flows"))

from flowkit import Kit  # noqa: E402


@pytest.fixture
async def kit(client, auth, app) -> Kit:  # noqa: ANN001
    return Kit(client, auth, app)
