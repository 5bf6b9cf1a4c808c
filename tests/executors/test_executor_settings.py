"""The lease and poll settings are Settings fields: read from the environment like every other setting,
carried to worker processes with the rest, and refused when out of range instead of silently clamped."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ihub.config import Settings


def test_lease_and_poll_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IHUB_RUN_LEASE_SECONDS", "7")
    monkeypatch.setenv("IHUB_POLL_INTERVAL", "0.25")
    settings = Settings(_env_file=None)
    assert (settings.run_lease_seconds, settings.poll_interval) == (7.0, 0.25)
    # Worker processes get the settings as JSON over a pipe (executors/worker_process.py): nothing is lost.
    carried = Settings(**settings.model_dump(mode="json"))
    assert (carried.run_lease_seconds, carried.poll_interval) == (7.0, 0.25)


@pytest.mark.parametrize(("name", "value"), [("IHUB_RUN_LEASE_SECONDS", "0.5"), ("IHUB_POLL_INTERVAL", "0.001")])
def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("IHUB_").lower()):
        Settings(_env_file=None)
