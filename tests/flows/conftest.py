from __future__ import annotations

import pytest
from flowkit import Kit


@pytest.fixture
async def kit(client, auth, app) -> Kit:  # noqa: ANN001
    return Kit(client, auth, app)
