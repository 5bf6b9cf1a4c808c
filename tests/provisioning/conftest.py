"""Fixtures for the token exchange and key tests: settings overrides (the `api` helper is in the root conftest)."""

from __future__ import annotations

from typing import Any

import pytest

from ihub.config import Settings


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override with `@pytest.mark.parametrize("settings_overrides", [{...}])` to change settings for a test."""
    return {}


@pytest.fixture
def settings(settings: Settings, settings_overrides: dict[str, Any]) -> Settings:
    return settings.model_copy(update=settings_overrides) if settings_overrides else settings
