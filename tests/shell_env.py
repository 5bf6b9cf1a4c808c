"""Point `ihub` commands run in process at a test's hub: an operator's shell has only IHUB_* variables."""

from __future__ import annotations

import os

import pytest

from ihub.config import Settings, get_settings


def use_hub_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's database, secret key and data directory as IHUB_* variables, and nothing else of the
    environment's IHUB_* (a developer's own settings must not leak into the command)."""
    for name in [name for name in os.environ if name.startswith("IHUB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IHUB_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("IHUB_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("IHUB_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
