"""Fixtures for Connect (OAuth2 authorization code): a real authorization server and a target that checks its
tokens, both on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "flows"))
sys.path.insert(0, str(HERE.parent / "console"))

from authserver import AuthServer, Running  # noqa: E402
from flowkit import Kit  # noqa: E402

PUBLIC_URL = "http://testserver"  # tests/conftest.py: the hub's IHUB_PUBLIC_URL in tests


@pytest.fixture
def authserver() -> Iterator[AuthServer]:
    state = AuthServer(redirect_uri=PUBLIC_URL + "/oauth/callback")
    running = Running(state)
    yield state
    running.stop()


@pytest.fixture
async def kit(client, auth, app) -> Kit:  # noqa: ANN001
    return Kit(client, auth, app)
